"""deploy/k8s/: every manifest is valid against the Kubernetes schemas (offline, with the
schemas bundled in kubernetes-validate), the KEDA resources against their CRDs' shape, and the
workers are wired the way the daemon needs (GPU, probes, grace, settings, scaling signal)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy.files import DEPLOY, default, known_settings, settings_from

K8S = DEPLOY / "k8s"
# Kubernetes minor version the manifests target; kubernetes-validate bundles its schemas.
KUBERNETES_VERSION = "1.30"
KEDA_API = "keda.sh/v1alpha1"


def _load() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


DOCS = _load()
CORE = [(p, d) for p, d in DOCS if not d["apiVersion"].startswith("keda.sh/")]
KEDA = [(p, d) for p, d in DOCS if d["apiVersion"].startswith("keda.sh/")]


def _id(item) -> str:
    path, doc = item
    meta = doc.get("metadata", {})
    name = meta.get("name") or meta.get("generateName", "?")
    return f"{path.relative_to(K8S)}:{doc['kind']}/{name}"


def _find(kind: str, name: str) -> dict:
    found = [d for _, d in DOCS if d["kind"] == kind and
             (d["metadata"].get("name") or d["metadata"].get("generateName")) == name]
    assert len(found) == 1, f"expected one {kind} {name} under deploy/k8s, found {len(found)}"
    return found[0]


def _pod_specs() -> list[tuple[str, dict]]:
    specs = []
    for item in CORE:
        doc = item[1]
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs.append((_id(item), doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            specs.append((_id(item), doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


def _settings_env() -> dict[str, str]:
    return dict(_find("ConfigMap", "rlr-settings")["data"])


def test_the_expected_resources_are_there():
    kinds = {(d["kind"], d["metadata"].get("name") or d["metadata"]["generateName"])
             for _, d in DOCS}
    for wanted in [("Namespace", "rlr"), ("ConfigMap", "rlr-settings"),
                   ("Deployment", "rlr-worker"), ("Deployment", "rlr-bridge-mqtt"),
                   ("Job", "rlr-trainer-"), ("ScaledObject", "rlr-worker"),
                   ("TriggerAuthentication", "rlr-keda-redis"),
                   ("PersistentVolumeClaim", "rlr-trainer-work"),
                   ("Deployment", "rlr-console"), ("Service", "rlr-console")]:
        assert wanted in kinds, f"{wanted} is missing from deploy/k8s"


@pytest.mark.parametrize("item", CORE, ids=_id)
def test_manifest_is_valid_against_the_kubernetes_schema(item):
    kv = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install -e '.[dev]')")
    doc = item[1]
    try:
        # strict: unknown fields (a misspelt key) are errors, as `kubectl apply` would say
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{_id(item)} is not valid Kubernetes {KUBERNETES_VERSION}: {where}: "
                    f"{exc.message}")
    except kv.SchemaNotFoundError as exc:
        pytest.fail(f"{_id(item)}: {exc.message}")


def test_every_namespaced_resource_is_in_the_rlr_namespace():
    for item in DOCS:
        doc = item[1]
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "rlr", f"{_id(item)}: namespace"


# ------------------------------------------------------------------------------- KEDA

# KEDA's CRDs are not among the Kubernetes schemas: the fields these manifests use, as the
# KEDA v2 CRDs define them (trigger metadata is map[string]string: numbers must be quoted).
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_META = {"type": "object", "required": ["name", "namespace"],
         "properties": {"name": _NAME, "namespace": _NAME}}
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": KEDA_API}, "kind": {"const": "ScaledObject"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object", "required": ["name"], "additionalProperties": False,
                        "properties": {"apiVersion": {"type": "string"},
                                       "kind": {"type": "string"}, "name": _NAME,
                                       "envSourceContainerName": {"type": "string"}}},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                    "fallback": {"type": "object"},
                    "advanced": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": {
                                "type": "object", "additionalProperties": False,
                                "properties": {"name": {"type": "string"},
                                               "behavior": {"type": "object"}}},
                            "scalingModifiers": {"type": "object"}}},
                    "triggers": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "useCachedMetrics": {"type": "boolean"},
                                "metricType": {"enum": ["AverageValue", "Value",
                                                        "Utilization"]},
                                "metadata": {"type": "object",
                                             "additionalProperties": {"type": "string"}},
                                "authenticationRef": {
                                    "type": "object", "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {"name": _NAME,
                                                   "kind": {"enum": [
                                                       "TriggerAuthentication",
                                                       "ClusterTriggerAuthentication"]}}}}}},
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": KEDA_API}, "kind": {"const": "TriggerAuthentication"},
            "metadata": _META,
            "spec": {
                "type": "object", "minProperties": 1,
                "properties": {
                    "secretTargetRef": {
                        "type": "array", "minItems": 1,
                        "items": {"type": "object", "required": ["parameter", "name", "key"],
                                  "additionalProperties": False,
                                  "properties": {"parameter": {"type": "string"},
                                                 "name": _NAME, "key": {"type": "string"}}}},
                    "env": {"type": "array"},
                    "hashiCorpVault": {"type": "object"},
                    "podIdentity": {"type": "object"},
                },
            },
        },
    },
}


@pytest.mark.parametrize("item", KEDA, ids=_id)
def test_keda_resource_matches_its_crd(item):
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed (it comes with kubernetes-validate)")
    doc = item[1]
    assert doc["kind"] in KEDA_SCHEMAS, f"{_id(item)}: no schema for KEDA kind {doc['kind']}"
    errors = sorted(jsonschema.Draft202012Validator(KEDA_SCHEMAS[doc["kind"]]).iter_errors(doc),
                    key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{_id(item)}: {'.'.join(map(str, e.path))}: {e.message}"
                                 for e in errors)


def test_keda_scales_the_workers_on_every_lines_frame_stream():
    scaled = _find("ScaledObject", "rlr-worker")["spec"]
    target = scaled["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    worker = _find("Deployment", target["name"])
    assert "worker" in _container(worker)["args"]
    env = _settings_env()
    lines = [x.strip() for x in env.get("RLR_LINES", default("lines")[0]).split(",")]
    group = env.get("RLR_GROUP", default("group"))
    streams = set()
    for trigger in scaled["triggers"]:
        assert trigger["type"] in ("redis-streams", "redis-cluster-streams")
        meta = trigger["metadata"]
        # the daemon's key for a line's frames: the braces are a Redis Cluster hash tag
        streams.add(meta["stream"])
        assert meta["consumerGroup"] == group
        assert {"pendingEntriesCount", "lagCount"} & set(meta), "no scaling target"
        if "pendingEntriesCount" in meta:
            # pending entries exist only while a worker reads: 0 replicas would never scale up
            assert scaled.get("minReplicaCount", 0) >= 1
        auth = _find("TriggerAuthentication", trigger["authenticationRef"]["name"])
        for ref in auth["spec"]["secretTargetRef"]:
            secret = _find("Secret", ref["name"])
            assert ref["key"] in secret.get("stringData", secret.get("data", {}))
    assert streams == {f"rlr:frames:{{{line}}}" for line in lines}
    assert scaled["maxReplicaCount"] >= scaled.get("minReplicaCount", 0)


# ---------------------------------------------------------------------------- workloads


def _container(doc: dict, name: str | None = None) -> dict:
    containers = doc["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def test_worker_requests_a_gpu_and_is_probed_with_rlrctl_check():
    worker = _find("Deployment", "rlr-worker")
    c = _container(worker)
    assert c["args"][:2] == ["rlrctl", "worker"]
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    for probe in ("livenessProbe", "readinessProbe"):
        command = " ".join(c[probe]["exec"]["command"])
        # this pod's own worker, by its consumer name (= the pod name, below)
        assert "rlrctl check --worker" in command and "$RLR_CONSUMER" in command, probe
        assert "-q" in shlex.split(command[command.index("rlrctl"):]), probe
        # rlrctl imports torch: a probe needs seconds, not the default 1 s
        assert c[probe]["timeoutSeconds"] >= 10, probe
    consumer = next(e for e in c["env"] if e["name"] == "RLR_CONSUMER")
    assert consumer["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_worker_termination_grace_outlasts_the_batch_drain(monkeypatch):
    worker = _find("Deployment", "rlr-worker")
    grace = settings_from(_settings_env(), monkeypatch).shutdown_grace_s
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace + 5


def test_trainer_job_runs_queued_jobs_on_a_gpu_and_keeps_its_workdir():
    job = _find("Job", "rlr-trainer-")
    c = _container(job)
    assert c["args"][:2] == ["rlrctl", "trainer"] and "--once" in c["args"]
    assert c["args"][c["args"].index("--device") + 1].startswith("cuda")
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    workdir = c["args"][c["args"].index("--workdir") + 1]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == workdir)
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"])
    _find("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


@pytest.mark.parametrize("name,spec", _pod_specs(), ids=[n for n, _ in _pod_specs()])
def test_pods_are_locked_down_and_get_no_service_link_variables(name, spec):
    # Service links inject e.g. RLR_WORKER_METRICS_PORT, and rlrctl refuses unknown RLR_ names
    assert spec.get("enableServiceLinks") is False, name
    assert spec["securityContext"]["runAsNonRoot"] is True, name
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert "memory" in c["resources"]["limits"], name


def test_settings_and_secrets_are_accepted_by_rlrctl(monkeypatch):
    """What the rlr pods get through envFrom must load: misspelt names stop them at start."""
    env = _settings_env()
    known = known_settings()
    assert set(env) <= known, f"unknown settings in rlr-settings: {set(env) - known}"
    for _, doc in DOCS:
        if doc["kind"] != "Deployment" and doc["kind"] != "Job":
            continue
        c = _container(doc)
        if c["args"][0] != "rlrctl":
            continue
        merged = dict(env)
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                secret = _find("Secret", source["secretRef"]["name"])
                merged.update(secret.get("stringData", {}))
            else:
                assert source["configMapRef"]["name"] == "rlr-settings"
        for var in c.get("env", []):
            merged[var["name"]] = var.get("value", "pod-name-0")
        settings_from(merged, monkeypatch)  # raises SettingsError naming the bad variable
