"""deploy/k8s: both overlays rendered (kubectl kustomize where it exists, and always by the small Python
renderer below, which must agree with it), every core object validated strictly against the Kubernetes
OpenAPI schemas bundled in `kubernetes-validate` (offline), the CRDs checked against generated models of
their published schemas (KEDA ScaledObject: cloudcoil-models-keda; ServiceMonitor:
cloudcoil-models-prometheus-operator) with unknown fields rejected, and Strimzi KafkaTopic — for which no
offline schema package exists — checked structurally and against the topic plan. Then the operator's
promises: probes, grace > drain, PDBs, Secret-based credentials, ServiceMonitors that find the Services,
KEDA numbers equal to the capacity model's, KEDA queries naming metrics the code exports.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from app.capacity_cmds import plans_from_args
from app.cli import build_parser
from jobscore.settings import CommonSettings, SummarizerSettings, WorkerSettings
from jobscore.topics import plan_topics, strimzi_resources

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("cpu", "gpu")
K8S_VERSION = "1.32.0"
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "KafkaTopic", "PrometheusRule"}
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --- a small kustomize: the subset deploy/k8s uses -------------------------------------------------


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _smp(base: Any, patch: Any) -> Any:
    """Strategic merge as Kubernetes does it for the fields we patch: maps merge, lists of named
    objects (containers, env, volumes) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _smp(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in patch):
        # kustomize's order: the patch's items first (merged with their originals), then the rest
        originals = {x.get("name"): x for x in base}
        merged = [_smp(originals[i["name"]], i) if i["name"] in originals else copy.deepcopy(i) for i in patch]
        named = {i["name"] for i in patch}
        return merged + [copy.deepcopy(x) for x in base if x.get("name") not in named]
    return copy.deepcopy(patch)


def _json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] in ("replace", "add"), op
        keys = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = doc
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = op["value"]
        else:
            assert op["op"] == "add" or last in node, f"replace of missing {op['path']}"
            node[last] = op["value"]
    return doc


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    return doc.get("spec", {}).get("template", {}).get("spec") if doc["kind"] == "Deployment" else None


def render_python(directory: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        p = (directory / res).resolve()
        objs += render_python(p) if p.is_dir() else _docs(p)
    for patch in k.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        if "target" in patch:
            t = patch["target"]
            objs = [
                _json6902(o, body) if (o["kind"], o["metadata"]["name"]) == (t["kind"], t["name"]) else o for o in objs
            ]
        else:
            key = (body["kind"], body["metadata"]["name"])
            assert any((o["kind"], o["metadata"]["name"]) == key for o in objs), f"patch target {key} missing"
            objs = [_smp(o, body) if (o["kind"], o["metadata"]["name"]) == key else o for o in objs]
    for group in k.get("labels", []):
        for o in objs:
            o["metadata"].setdefault("labels", {}).update(group["pairs"])
    for img in k.get("images", []):
        for o in objs:
            spec = _pod_spec(o)
            for c in (spec or {}).get("containers", []):
                if c["image"].split(":")[0] == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    if "namespace" in k:
        for o in objs:
            o["metadata"]["namespace"] = k["namespace"]
    return objs


def _by_key(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def render(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    return _by_key(render_python(K8S / "overlays" / overlay))


def _one(objs: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return objs[(kind, name)]


def _config(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    return _one(objs, "ConfigMap", "jobscore")["data"]


def _settings_kwargs(config: dict[str, str], ca: Path, model: type[BaseModel] = CommonSettings) -> dict[str, Any]:
    """The ConfigMap's JOBSCORE_* variables as ``model``'s fields (each process reads those it has)."""
    kw: dict[str, Any] = {k[len("JOBSCORE_") :].lower(): v for k, v in config.items() if k.startswith("JOBSCORE_")}
    # The Secret's values and the mounted CA are not here: stand-ins, so the settings validate.
    assert kw["kafka_ssl_cafile"].startswith("/etc/jobscore/kafka-ca/")
    kw |= {"kafka_sasl_username": "u", "kafka_sasl_password": "p", "kafka_ssl_cafile": ca}
    return {k: v for k, v in kw.items() if k in model.model_fields}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_text("stand-in for the Strimzi cluster CA mounted in the pods\n")
    return path


# --- rendering and schemas --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_python_render_matches_kubectl_kustomize(overlay: str) -> None:
    mine = render(overlay)
    assert {k for k, _ in mine} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "ScaledObject",
        "KafkaTopic",
        "PrometheusRule",
    }
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("kubectl not found: overlays rendered by the Python renderer only")
        return
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    theirs = _by_key([d for d in yaml.safe_load_all(out) if d])
    assert theirs == mine


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_valid_against_kubernetes_schemas_strict(overlay: str) -> None:
    core = [o for o in render(overlay).values() if o["kind"] not in CRD_KINDS]
    assert len(core) == 10  # 2 configmaps (settings, dashboard), 3 deployments, 3 services, 2 PDBs
    for o in core:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_schema_validation_rejects_a_typo() -> None:
    dep = copy.deepcopy(render("gpu")[("Deployment", "jobscore-worker")])
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = dep["spec"]["template"]["spec"]["containers"][
        0
    ].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def _keys(x: Any, prefix: str = "") -> set[str]:
    if isinstance(x, dict):
        return {f"{prefix}/{k}" for k in x} | {p for k, v in x.items() for p in _keys(v, f"{prefix}/{k}")}
    if isinstance(x, list):
        return {p for i, v in enumerate(x) for p in _keys(v, f"{prefix}/{i}")}
    return set()


def _crd_check(model: type[BaseModel], doc: dict[str, Any]) -> None:
    """Validate against the CRD's generated model; a field the model drops on a round trip is unknown."""
    obj = model.model_validate(doc)
    back = obj.model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = _keys(doc) - _keys(back)
    assert not unknown, f"{doc['kind']} {doc['metadata']['name']}: fields not in the CRD schema: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_crds_valid(overlay: str) -> None:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject
    from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

    objs = render(overlay)
    seen = {"ScaledObject": 0, "ServiceMonitor": 0, "KafkaTopic": 0, "PrometheusRule": 0}
    for (kind, _), o in objs.items():
        if kind == "ScaledObject":
            _crd_check(ScaledObject, o)
        elif kind == "ServiceMonitor":
            _crd_check(ServiceMonitor, o)
        elif kind == "PrometheusRule":
            _crd_check(PrometheusRule, o)
        elif kind == "KafkaTopic":
            # No offline Strimzi schema package: the fields the Topic Operator requires, structurally.
            assert o["apiVersion"] == "kafka.strimzi.io/v1beta2"
            assert DNS_1123_SUBDOMAIN.match(o["metadata"]["name"])
            assert o["metadata"]["labels"]["strimzi.io/cluster"]
            assert set(o["spec"]) <= {"topicName", "partitions", "replicas", "config"}
            assert o["spec"]["partitions"] >= 1 and o["spec"]["replicas"] >= 1
            assert all(isinstance(v, str | int | float | bool) for v in o["spec"]["config"].values())
        else:
            continue
        seen[kind] += 1
    assert seen == {"ScaledObject": 2, "ServiceMonitor": 3, "KafkaTopic": 6, "PrometheusRule": 1}


def test_crd_check_rejects_unknown_field() -> None:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    so = copy.deepcopy(render("gpu")[("ScaledObject", "jobscore-worker")])
    so["spec"]["maxReplicas"] = 3  # the HPA's word, not KEDA's
    with pytest.raises(AssertionError, match="maxReplicas"):
        _crd_check(ScaledObject, so)


# --- what the operator relies on ----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_probes_grace_pdb_secrets(overlay: str) -> None:
    objs = render(overlay)
    config = _config(objs)
    port = int(config["JOBSCORE_METRICS_PORT"])
    drain = float(config["JOBSCORE_DRAIN_TIMEOUT_S"])
    pdbs = [o for (k, _), o in objs.items() if k == "PodDisruptionBudget"]
    for name in ("jobscore-worker", "jobscore-summarizer"):
        dep = _one(objs, "Deployment", name)
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        assert spec["terminationGracePeriodSeconds"] > drain, name
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 10001
        (c,) = spec["containers"]
        (metrics,) = [p for p in c["ports"] if p["name"] == "metrics"]
        assert metrics["containerPort"] == port
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        startup = c["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # engine load is not a hang
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        env = {e["name"]: e for e in c["env"]}
        for var, key in (
            ("JOBSCORE_KAFKA_SASL_USERNAME", "kafka-sasl-username"),
            ("JOBSCORE_KAFKA_SASL_PASSWORD", "kafka-sasl-password"),
            ("JOBSCORE_REDIS_URL", "redis-url"),
        ):
            assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "jobscore-credentials", "key": key}, var
        labels = pod["metadata"]["labels"]
        assert any(
            all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())
            and "maxUnavailable" in p["spec"]
            for p in pdbs
        ), f"no PodDisruptionBudget selects {name}"
        svc = _one(objs, "Service", name)
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
        assert [p["name"] for p in svc["spec"]["ports"]] == ["metrics"]
        sm = _one(objs, "ServiceMonitor", name)
        assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
        assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert not any("password" in k.lower() or "@" in v for k, v in config.items()), "credentials belong in the Secret"
    worker = _one(objs, "Deployment", "jobscore-worker")["spec"]["template"]["spec"]
    if overlay == "gpu":
        assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert worker["containers"][0]["image"] == "jobscore:cuda"
    else:
        assert "nvidia.com/gpu" not in worker["containers"][0]["resources"]["limits"]
        assert worker["containers"][0]["image"] == "jobscore:cpu"
    assert (
        _one(objs, "Deployment", "jobscore-summarizer")["spec"]["template"]["spec"]["containers"][0]["image"]
        == "jobscore:cpu"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_is_valid_settings(overlay: str, ca: Path) -> None:
    config = _config(render(overlay))
    fields = set(WorkerSettings.model_fields) | set(SummarizerSettings.model_fields)
    unknown = [k for k in config if k.startswith("JOBSCORE_") and k[len("JOBSCORE_") :].lower() not in fields]
    assert not unknown, f"no such setting: {unknown}"
    w = WorkerSettings(**_settings_kwargs(config, ca, WorkerSettings))
    SummarizerSettings(**_settings_kwargs(config, ca, SummarizerSettings))
    assert w.kafka_security_protocol == "SASL_SSL" and w.enable_idempotence


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_numbers_are_the_capacity_model(overlay: str) -> None:
    objs = render(overlay)
    so = _one(objs, "ScaledObject", "jobscore-worker")
    args = shlex.split(so["metadata"]["annotations"]["jobscore.io/capacity"])
    p, _ = plans_from_args(build_parser().parse_args(["capacity", *args]))
    assert p.within_budget, "the documented example must meet its latency budget"
    spec = so["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (p.keda_min_replicas, p.keda_max_replicas)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert int(trigger["metadata"]["threshold"]) == p.keda_threshold_pairs
    # The backlog is counted in pairs from the broker (the lag exporter reads the pending requests' candidates):
    # no assumed candidates-per-request, and no value (KEDA keeps the replicas) rather than 0 without it.
    assert "jobscore_group_lag_pairs" in trigger["metadata"]["query"]
    requests = _one(objs, "KafkaTopic", WorkerSettings().topic_requests)
    assert requests["spec"]["partitions"] == p.partitions >= spec["maxReplicaCount"]
    assert spec["scaleTargetRef"]["name"] == "jobscore-worker"


def test_keda_queries_name_exported_metrics_and_groups() -> None:
    from prometheus_client import REGISTRY

    import jobscore.metrics  # noqa: F401  (registers every series)

    exported: set[str] = set()
    for fam in REGISTRY.collect():
        exported.add(fam.name)
        if fam.type == "counter":
            exported.add(fam.name + "_total")
        if fam.type == "histogram":
            exported |= {fam.name + s for s in ("_bucket", "_sum", "_count")}
    objs = render("gpu")
    groups = {"jobscore-worker": WorkerSettings().group_id, "jobscore-summarizer": SummarizerSettings().group_id}
    for name, group in groups.items():
        query = _one(objs, "ScaledObject", name)["spec"]["triggers"][0]["metadata"]["query"]
        names = set(re.findall(r"\b(jobscore_[a-z_]+)", query))
        assert names and names <= exported, f"{name}: not exported: {sorted(names - exported)}"
        assert f'group="{group}"' in query


def test_kafkatopics_are_the_topic_plan(ca: Path) -> None:
    """base/topics.yaml is `jobscore topics --strimzi` run with the ConfigMap's settings."""
    config = {d["metadata"]["name"]: d for d in _docs(K8S / "base" / "configmap.yaml")}["jobscore"]["data"]
    settings = CommonSettings(**_settings_kwargs(config, ca))
    assert _docs(K8S / "base" / "topics.yaml") == strimzi_resources(plan_topics(settings), cluster="jobscore")
    assert settings.topic_replication_factor >= 3  # production: a broker may fail without losing acks=all writes


def test_alerts_and_dashboard_ship_for_kubernetes_as_in_compose() -> None:
    """The PrometheusRule holds exactly deploy/prometheus/alerts.yml's rules, the dashboard ConfigMap exactly
    deploy/grafana/jobscore.json (for Grafana's sidecar); the lag exporter runs and is scraped, and the KEDA
    triggers read its broker-side series (seen with every consumer down)."""
    objs = render("gpu")
    rule = _one(objs, "PrometheusRule", "jobscore")
    assert rule["spec"]["groups"] == yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    cm = _one(objs, "ConfigMap", "jobscore-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["jobscore.json"]) == json.loads((DEPLOY / "grafana" / "jobscore.json").read_text())
    exporter = _one(objs, "Deployment", "jobscore-lag-exporter")["spec"]["template"]["spec"]["containers"][0]
    assert exporter["args"][0] == "lag-exporter" and exporter["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert _one(objs, "ServiceMonitor", "jobscore-lag-exporter")["spec"]["endpoints"][0]["port"] == "metrics"
    queries = {n: _one(objs, "ScaledObject", n)["spec"]["triggers"][0]["metadata"]["query"] for n in
               ("jobscore-worker", "jobscore-summarizer")}  # fmt: skip
    assert "jobscore_group_lag_pairs" in queries["jobscore-worker"]
    assert "jobscore_group_lag_records" in queries["jobscore-summarizer"]
    assert all("jobscore_consumer_lag" not in q for q in queries.values())
