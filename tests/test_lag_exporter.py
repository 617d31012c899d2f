"""Lag seen from the broker (issue 28): `jobscore lag-exporter` reads committed and end offsets whatever the
consumers do, so with every worker down and a backlog the lag series still grows — and the alert rules fire on
it (evaluated by Prometheus' own `promtool test rules`, from Debian's prometheus package)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from client import new_request, publish_requests
from jobscore.settings import CommonSettings, settings_env
from ops.devstack import free_port
from ops.lagexporter import export_once
from ops.status import default_groups
from tests.conftest import WAIT_S

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMTOOL_DIR = Path(os.environ.get("JOBSCORE_TEST_CACHE", Path.home() / ".cache" / "jobscore-tests")) / "promtool"


def lag(group: str, metric: str = "jobscore_group_lag_records") -> float:
    total = 0.0
    for fam in REGISTRY.collect():
        for s in fam.samples:
            if s.name == metric and s.labels.get("group") == group:
                total += s.value
    return total


async def test_lag_is_read_from_the_broker_and_grows_with_no_consumer_running(topics: CommonSettings) -> None:
    group = f"nobody-{topics.topic_requests}"  # a group no worker ever joined: every request is lag
    groups = default_groups(topics, worker_group=group)
    reqs = [new_request("nurse", [f"j-{i}", f"k-{i}", f"l-{i}"]) for i in range(5)]
    await publish_requests(topics, reqs)
    await export_once(topics, groups)
    assert lag(group) == 5 and lag(group, "jobscore_group_lag_pairs") == 15
    before = REGISTRY.get_sample_value("jobscore_lag_exporter_last_success_timestamp_seconds") or 0.0
    await publish_requests(topics, [new_request("chef", ["a", "b"]) for _ in range(4)])
    await export_once(topics, groups)
    assert lag(group) == 9 and lag(group, "jobscore_group_lag_pairs") == 23
    assert (REGISTRY.get_sample_value("jobscore_lag_exporter_last_success_timestamp_seconds") or 0.0) >= before


def test_the_command_serves_the_broker_lag_over_http(topics: CommonSettings) -> None:
    import asyncio

    group = f"nobody-cli-{topics.topic_requests}"
    asyncio.run(publish_requests(topics, [new_request("baker", ["x"]) for _ in range(3)]))
    port = free_port()
    env = settings_env(topics)
    argv = ["lag-exporter", "--port", str(port), "--interval", "0.3", "--worker-group", group]
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *argv],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = -1.0
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and seen != 3:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                text = ""
            seen = sum(
                s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
                if s.name == "jobscore_group_lag_records" and s.labels.get("group") == group
            )
            time.sleep(0.2)  # polling a scrape endpoint as Prometheus does
        assert seen == 3, proc.stderr.read() if proc.poll() is not None and proc.stderr else seen
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 0


@pytest.fixture(scope="module")
def promtool() -> Iterator[Path]:
    """Prometheus' promtool, unpacked from Debian's prometheus package (not installed: no service starts)."""
    exe = PROMTOOL_DIR / "usr" / "bin" / "promtool"
    if not exe.exists():
        assert shutil.which("apt-get") and shutil.which("dpkg"), "needs apt-get and dpkg to fetch promtool"
        PROMTOOL_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "prometheus"], cwd=PROMTOOL_DIR, check=True, capture_output=True)
        (deb,) = PROMTOOL_DIR.glob("prometheus_*.deb")
        subprocess.run(["dpkg", "-x", str(deb), str(PROMTOOL_DIR)], check=True, capture_output=True)
    yield exe


def test_with_every_worker_down_and_a_backlog_the_alerts_fire(promtool: Path, tmp_path: Path) -> None:
    """The scenario, as Prometheus sees it: no worker answers scrapes (no `up{job="jobscore-worker"}` series)
    while the exporter's lag grows; the summarizers and the exporter are fine."""
    check = subprocess.run([str(promtool), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}

    def fired(name: str, labels: dict[str, str], summary: str) -> dict[str, object]:
        annotations = {"summary": summary, "description": rules[name]["annotations"]["description"]}
        return {"exp_labels": {"severity": rules[name]["labels"]["severity"], **labels}, "exp_annotations": annotations}

    lagging = {"group": "jobscore-worker", "topic": "jobscore.requests"}
    test = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'jobscore_group_lag_records{group="jobscore-worker",topic="jobscore.requests",'
                        'partition="0"}',
                        "values": "1000+100x40",  # a backlog that keeps growing
                    },
                    {"series": 'up{job="jobscore-summarizer"}', "values": "1x40"},
                    {"series": 'up{job="jobscore-lag-exporter"}', "values": "1x40"},
                    {"series": "jobscore_lag_exporter_last_success_timestamp_seconds", "values": "0+60x40"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "30m",
                        "alertname": "JobscoreWorkersDown",
                        "exp_alerts": [fired("JobscoreWorkersDown", {}, "No jobscore worker is up")],
                    },
                    {
                        "eval_time": "30m",
                        "alertname": "JobscoreLagGrowing",
                        "exp_alerts": [
                            fired(
                                "JobscoreLagGrowing",
                                lagging,
                                "jobscore-worker lags 4000 records on jobscore.requests and the lag is growing",
                            )
                        ],
                    },
                    {"eval_time": "30m", "alertname": "JobscoreSummarizersDown", "exp_alerts": []},
                    {"eval_time": "30m", "alertname": "JobscoreLagExporterDown", "exp_alerts": []},
                    # Before the backlog has grown for the rule's `for:` period, nothing fires yet.
                    {"eval_time": "4m", "alertname": "JobscoreWorkersDown", "exp_alerts": []},
                ],
            }
        ],
    }
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(yaml.safe_dump(test, sort_keys=False))
    out = subprocess.run([str(promtool), "test", "rules", str(spec)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
