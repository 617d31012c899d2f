"""jobscore-client as a publisher gets it: the wheel built from packaging/jobscore-client, installed into a
fresh virtual environment of every supported Python (3.9–3.13, from pyenv), with neither torch, vLLM,
pydantic nor the services in it, publishing requests (async and blocking) and awaiting the rankings of a
real worker.

The venvs install the wheel's two dependencies (aiokafka, msgspec) from the package index, as a publisher
would; pip's cache makes later runs fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from engine.corpus import postings
from jobscore.settings import WorkerSettings
from tests.conftest import WAIT_S
from tests.helpers import running, seed
from worker.loop import Worker

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "packaging" / "jobscore-client"
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
# What a publisher must not get with the client: the engine stack and the services' own dependencies.
HEAVY = ("torch", "vllm", "transformers", "pydantic", "pydantic_settings", "redis", "engine", "jobscore", "worker")

# Run inside each venv: publish one request with the async client and one with the blocking one.
PUBLISHER = r"""
import asyncio, importlib.util, json, sys
from client import ClientConfig, ScoringClient, SyncScoringClient

config = ClientConfig.from_env()
jobs = sys.argv[2].split(",")

async def main():
    async with ScoringClient(config) as c:
        return await c.score("registered nurse", jobs, top_k=2, timeout=float(sys.argv[1]),
                             request_id="dist-async-" + sys.argv[3])

ranking = asyncio.run(main())
with SyncScoringClient(config) as c:
    blocking = c.score("python developer", jobs, top_k=1, timeout=float(sys.argv[1]),
                       request_id="dist-sync-" + sys.argv[3])
print(json.dumps({
    "python": "%d.%d" % sys.version_info[:2],
    "async": [r.job_id for r in ranking.results],
    "sync": [r.job_id for r in blocking.results],
    "status": [ranking.status, blocking.status],
    "heavy": [m for m in sys.argv[4].split(",") if importlib.util.find_spec(m) is not None],
}))
"""


def find_python(version: str) -> Path:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(pyenv.glob(f"{version}.*"), reverse=True):
        exe = candidate / "bin" / f"python{version}"
        if exe.exists():
            return exe
    raise AssertionError(f"Python {version} not found under {pyenv}: install it (`pyenv install {version}`)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools reuses its build/ folder, which can hold files since removed from client/ or schemas/.
    shutil.rmtree(DIST / "build", ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(DIST)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("jobscore_client-*.whl")
    return built


@pytest.fixture(scope="module")
def venvs(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("venvs")

    def make(version: str) -> tuple[str, Path]:
        env_dir = root / f"py{version}"
        subprocess.run([str(find_python(version)), "-m", "venv", str(env_dir)], check=True, capture_output=True)
        py = env_dir / "bin" / "python"
        done = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"Python {version}: installing the wheel failed:\n{done.stderr[-3000:]}"
        return version, py

    with ThreadPoolExecutor(len(PYTHONS)) as pool:
        return dict(pool.map(make, PYTHONS))


def test_wheel_holds_the_client_and_schemas_only_typed_with_two_dependencies(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("jobscore_client-")}
    assert tops == {"client", "schemas"}, tops
    assert "client/py.typed" in names and "schemas/py.typed" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = sorted(
        line.split(":", 1)[1].strip().split("<")[0].split(">")[0]
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:")
    )
    assert requires == ["aiokafka", "msgspec"], requires
    assert "Requires-Python: >=3.9" in meta
    # The server distribution depends on this one, at the same version.
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((DIST / "pyproject.toml").read_text())["project"]
    assert f"jobscore-client=={client['version']}" in server["dependencies"]
    assert client["version"] == server["version"]


@pytest.mark.engine
async def test_publishers_on_every_supported_python_get_rankings_without_the_engine_stack(
    venvs: dict[str, Path], vllm_engine: Any, worker_settings: Callable[..., WorkerSettings]
) -> None:
    ws = worker_settings()
    items = postings(3, seed=3, prefix="dist")
    await seed(ws, items)
    env = {
        **os.environ,
        "JOBSCORE_KAFKA_BOOTSTRAP": ws.kafka_bootstrap,
        "JOBSCORE_TOPIC_REQUESTS": ws.topic_requests,
        "JOBSCORE_TOPIC_RANKINGS": ws.topic_rankings,
        "JOBSCORE_TOPIC_DEAD_LETTERS": ws.topic_dead_letters,
        "PYTHONPATH": "",  # nothing of the repository: only what the wheel installed
    }
    jobs = ",".join(p.job_id for p in items)

    async def publish(version: str, py: Path) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            str(py), "-I", "-c", PUBLISHER, str(WAIT_S), jobs, version, ",".join(HEAVY),
            cwd="/", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 2 * WAIT_S)
        assert proc.returncode == 0, f"Python {version}: the publisher failed:\n{err.decode()[-3000:]}"
        return json.loads(out.decode().strip().splitlines()[-1])

    async with running(Worker(ws, vllm_engine)):
        results = await asyncio.gather(*(publish(v, py) for v, py in venvs.items()))
    assert [r["python"] for r in results] == list(PYTHONS)
    for r in results:
        assert r["status"] == ["ok", "ok"], r
        assert len(r["async"]) == 2 and len(r["sync"]) == 1 and set(r["async"]) <= {p.job_id for p in items}, r
        assert r["heavy"] == [], f"Python {r['python']}: the client brought {r['heavy']}"
