"""The Grafana dashboard and the Prometheus alert rules query only metrics the code registers, and the
alert set covers the ops questions (lag growing, p99 over budget, dead letters, not ready, saturation)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import jobscore.health
import jobscore.metrics  # registers every metric

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "jobscore.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

METRIC = re.compile(r"\bjobscore_[a-z0-9_]+\b")


def exported_names() -> set[str]:
    """Every sample name the registry can export: counters with _total, histograms with _bucket/_count/
    _sum, info metrics with _info — the names a PromQL query has to use."""
    assert jobscore.health.READY is not None
    out: set[str] = set()
    for fam in REGISTRY.collect():
        n = fam.name
        if not n.startswith("jobscore_"):
            continue
        out |= {
            "counter": {f"{n}_total"},
            "histogram": {f"{n}_bucket", f"{n}_count", f"{n}_sum"},
            "info": {f"{n}_info"},
            "summary": {f"{n}_count", f"{n}_sum", n},
        }.get(fam.type, {n})
    return out


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_dashboard_queries_only_registered_metrics() -> None:
    names = exported_names()
    exprs = dashboard_exprs()
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert len(used) >= 15, f"the dashboard should cover the ops metrics; it queries {sorted(used)}"
    assert not used - names, f"dashboard queries metrics the code does not export: {sorted(used - names)}"


def test_dashboard_is_well_formed_for_provisioning() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    # The data source is a variable (any Prometheus: Compose's provisioned one by default, a cluster's in k8s)
    # and every query is scoped to the chosen namespace (all of them by default; Compose has none).
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["current"]["value"] == "prometheus"
    )
    assert variables["namespace"]["allValue"] == ".*"
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}"
        assert all('namespace=~"$namespace"' in t["expr"] for t in p["targets"]), p["title"]
        assert p["targets"] and all(t["expr"].strip() and t["refId"] for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]


def test_alerts_query_only_registered_metrics() -> None:
    names = exported_names()
    rules = alert_rules()
    used = {m for r in rules for m in METRIC.findall(r["expr"])}
    assert not used - names, f"alerts query metrics the code does not export: {sorted(used - names)}"
    for r in rules:
        assert r["alert"] and r["expr"].strip() and r["labels"]["severity"] in {"warning", "critical"}
        assert r["annotations"]["summary"], f"{r['alert']} needs a summary"


def test_alerts_cover_the_ops_questions() -> None:
    by_name = {r["alert"]: r for r in alert_rules()}
    need = {
        # Read from the broker (jobscore lag-exporter): still grows with every consumer down.
        "JobscoreLagGrowing": "jobscore_group_lag_records",
        "JobscoreWorkersDown": 'absent(up{job="jobscore-worker"} == 1)',
        "JobscoreSummarizersDown": 'absent(up{job="jobscore-summarizer"} == 1)',
        "JobscoreLagExporterDown": "jobscore_lag_exporter_last_success_timestamp_seconds",
        "JobscoreP99OverBudget": "jobscore_worker_request_latency_seconds_bucket",
        "JobscoreDeadLetters": "jobscore_dead_letters_total",
        "JobscoreNotReady": "jobscore_ready",
        "JobscoreEngineSaturated": "jobscore_worker_engine_busy_seconds_total",
    }
    for alert, metric in need.items():
        assert alert in by_name, f"missing alert {alert}"
        assert metric in by_name[alert]["expr"], f"{alert} should query {metric}"
    sat = by_name["JobscoreEngineSaturated"]
    assert ">= 0.95" in sat["expr"] and sat["for"] == "10m" and sat["labels"]["action"] == "scale-out"
    assert "0.99" in by_name["JobscoreP99OverBudget"]["expr"]


def test_a_misspelt_metric_is_caught() -> None:
    """The check itself works: a name the code does not export is reported."""
    names = exported_names()
    assert "jobscore_worker_requests_total" in names and "jobscore_worker_requests" not in names
    assert "jobscore_worker_request_latency_seconds_bucket" in names and "jobscore_build_info" in names
