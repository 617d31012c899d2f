"""deploy/compose.yaml: valid against the compose specification (the JSON schema check-jsonschema
bundles, offline), and consistent with the project — settings that exist, build targets that exist,
grace periods longer than the drain, Prometheus scraping every service and loading the alert rules,
Grafana provisioned with the ops dashboard. No Docker engine is needed (none runs here).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from jobscore.settings import SummarizerSettings, WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
BIN = Path(sys.executable).parent
JOBSCORE_SERVICES = ("topics", "summarizer", "worker", "worker-gpu")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    assert m, duration
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _host_path(service: dict[str, Any], container_path: str) -> Path:
    """The host file a container path of a bind-mounted service resolves to (relative to deploy/)."""
    for vol in service.get("volumes", []):
        src, dst = vol.split(":")[:2]
        if src.startswith(".") and (container_path == dst or container_path.startswith(dst.rstrip("/") + "/")):
            return (DEPLOY / src / container_path[len(dst) :].lstrip("/")).resolve()
    raise AssertionError(f"{container_path} is not inside a bind mount")


def test_compose_valid_against_compose_spec_schema() -> None:
    r = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_services_and_order() -> None:
    services = _compose()["services"]
    assert {"kafka", "redis", "prometheus", "grafana", *JOBSCORE_SERVICES} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, one node
    assert services["topics"]["command"] == ["topics"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
    for name in ("summarizer", "worker", "worker-gpu"):
        deps = services[name]["depends_on"]
        assert deps["topics"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
    # one command: everything but the GPU worker runs without a profile
    assert [n for n, s in services.items() if s.get("profiles")] == ["worker-gpu"]


def test_compose_images_are_dockerfile_targets() -> None:
    targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M))
    services = _compose()["services"]
    for name in JOBSCORE_SERVICES:
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
        assert build["target"] in targets, name
        assert services[name]["image"] == f"jobscore:{build['target']}"
    gpu = services["worker-gpu"]
    assert gpu["build"]["target"] == "cuda" and gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_compose_env_names_real_settings_and_grace_exceeds_drain() -> None:
    fields = {f"JOBSCORE_{n.upper()}" for n in (*WorkerSettings.model_fields, *SummarizerSettings.model_fields)}
    services = _compose()["services"]
    for name in JOBSCORE_SERVICES:
        env = services[name]["environment"]
        unknown = sorted(k for k in env if k.startswith("JOBSCORE_") and k not in fields)
        assert not unknown, f"{name}: no such setting {unknown}"
        # every setting must also be accepted by the service's settings model
        model = SummarizerSettings if name == "summarizer" else WorkerSettings
        model(
            **{k[len("JOBSCORE_") :].lower(): v for k, v in env.items() if k.startswith("JOBSCORE_") and "$" not in v}
        )
    drain = WorkerSettings().drain_timeout_s
    for name in ("summarizer", "worker", "worker-gpu"):
        assert _seconds(services[name]["stop_grace_period"]) > drain, name


def test_prometheus_scrapes_services_and_loads_alert_rules() -> None:
    services = _compose()["services"]
    prom = services["prometheus"]
    cfg_path = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    cfg = yaml.safe_load(_host_path(prom, cfg_path).read_text())
    assert _host_path(prom, cfg_path) == DEPLOY / "prometheus" / "prometheus.yml"
    assert [_host_path(prom, r) for r in cfg["rule_files"]] == [DEPLOY / "prometheus" / "alerts.yml"]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())  # the ops engineer's rules
    assert rules["groups"] and all(g["rules"] for g in rules["groups"])
    port = int(services["worker"]["environment"]["JOBSCORE_METRICS_PORT"])
    scraped = set()
    for job in cfg["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["port"] == port and sd["type"] == "A"
            scraped |= set(sd["names"])
    assert scraped == {"summarizer", "worker", "worker-gpu"}


def test_grafana_provisioned_with_ops_dashboard() -> None:
    graf = _compose()["services"]["grafana"]
    env = graf["environment"]
    prov = _host_path(graf, env["GF_PATHS_PROVISIONING"])
    assert _host_path(graf, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]) == DEPLOY / "grafana" / "jobscore.json"
    (ds,) = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert ds["url"] == "http://prometheus:9090" and ds["uid"] == "prometheus"
    (provider,) = yaml.safe_load((prov / "dashboards" / "jobscore.yml").read_text())["providers"]
    assert _host_path(graf, provider["options"]["path"]) == DEPLOY / "grafana"
    # the ops dashboard's panels point at the datasource provisioned here
    dashboard = json.loads((DEPLOY / "grafana" / "jobscore.json").read_text())
    # through the datasource variable, whose default is the datasource provisioned here
    uids = {m.group(1) for m in re.finditer(r'"datasource":\s*\{[^}]*"uid":\s*"([^"]+)"', json.dumps(dashboard))}
    assert uids == {"${datasource}"}
    (var,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert var["current"]["value"] == ds["uid"]
