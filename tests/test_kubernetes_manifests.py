"""deploy/kubernetes/ checked offline against the real schemas, and wired together as it must be.

- ConfigMap, Deployment, Service, PodDisruptionBudget: the strict JSON schemas of the Kubernetes
  API that the PyPI package `kubernetes-validate` ships (unknown fields are errors), for the
  oldest Kubernetes the README supports and the newest the package knows.
- ServiceMonitor, PrometheusRule: the `openAPIV3Schema` of the Prometheus Operator's CRDs
  (from the operator's Go module, release OPERATOR_MODULE's, as the Go module proxy serves it:
  `go mod download`, a package registry like PyPI), made strict as the API server's
  `--validate=strict` field validation is: an object's fields are the ones it declares. Their
  `metadata` is checked against the Kubernetes ObjectMeta schema.
- The PrometheusRule is generated from rules/llm-drift-exporter.rules.yml: same groups, and
  regenerating yields the committed file.

Each validator is also shown to reject a broken copy, so a schema that checked nothing would fail.
"""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from exporter.config import parse_config
from exporter.inputs.kafka import INSTANCE_ENV

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
# the Prometheus Operator release whose CRDs are checked against; its module holds them under
# example/prometheus-operator-crd/ (the files `kubectl apply` installs)
OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator@v0.93.0"
RULES = ROOT / "rules" / "llm-drift-exporter.rules.yml"
MIN_KUBERNETES = "1.29.0"  # deploy/kubernetes/README.md: requirements
KUBERNETES_VERSIONS = sorted({MIN_KUBERNETES, kubernetes_validate.latest_version()})
CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}
PORT = 9847
CONFIG_PATH = "/etc/llm-drift-exporter/config.yaml"


def _load_generator() -> Any:
    # deploy/ is no package: load the script as CI runs it, from its file
    spec = importlib.util.spec_from_file_location("generate_rules", KUBE / "generate_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate_rules = _load_generator()


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


DOCUMENTS = _documents()


def _kind(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in DOCUMENTS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _strict(schema: Any) -> Any:
    """A copy where every object that declares `properties` allows no other field (what the API
    server's strict field validation does for a structural schema), with the CRD's RE2
    patterns in Python's spelling: RE2 takes `^(?i)...`, Python wants the flag first."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("pattern"), str):
        out["pattern"] = re.sub(r"^\^(\(\?[a-z]+\))", r"\1^", out["pattern"])
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = _strict(out[key])
    return out


@cache
def _crd_dir() -> Path:
    """The operator's CRD files, from the Go module cache (downloaded once, sum-checked by
    the go command against the checksum database)."""
    try:
        done = subprocess.run(["go", "mod", "download", "-json", OPERATOR_MODULE],
                              capture_output=True, text=True, check=True, timeout=300)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"cannot get the Prometheus Operator's CRDs with the go command: {exc}")
    return Path(json.loads(done.stdout)["Dir"]) / "example" / "prometheus-operator-crd"


@cache
def _crd_validator(kind: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((_crd_dir() / CRD_FILES[kind]).read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"]]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # OpenAPI v3.0 schemas are JSON Schema draft 4 with extensions (x-kubernetes-*: ignored)
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


@cache
def _object_meta_validator(version: str) -> jsonschema.protocols.Validator:
    """Kubernetes' strict ObjectMeta schema, from the files kubernetes-validate ships."""
    base = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    folder = base / f"v{version}-local-strict"
    schema = json.loads((folder / "objectmeta-meta-v1.json").read_text(encoding="utf-8"))
    definitions = json.loads((folder / "_definitions.json").read_text(encoding="utf-8"))
    registry = referencing.Registry().with_resources(
        [(r.id(), r) for r in map(referencing.Resource.from_contents, (schema, definitions))]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _crd_errors(doc: dict[str, Any], version: str = MIN_KUBERNETES) -> list[str]:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _crd_validator(doc["kind"]).iter_errors(doc)
    ]
    errors += [
        f"metadata/{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _object_meta_validator(version).iter_errors(doc.get("metadata", {}))
    ]
    return errors


def _validate(doc: dict[str, Any], version: str) -> None:
    if doc["kind"] in CRD_FILES:
        errors = _crd_errors(doc, version)
        assert not errors, "\n".join(errors)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


# --- schemas -------------------------------------------------------------------------------


def test_every_manifest_is_a_known_kind() -> None:
    kinds = sorted(doc["kind"] for _, doc in DOCUMENTS)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceMonitor",
        ]
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("name", "doc"), DOCUMENTS, ids=[f"{name}:{doc['kind']}" for name, doc in DOCUMENTS]
)
def test_manifest_matches_its_schema(name: str, doc: dict[str, Any], version: str) -> None:
    _validate(doc, version)


def _broken(kind: str, path: list[str | int], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_kind(kind))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


BROKEN = [
    ("Deployment", ["spec", "replicas"], "three"),
    ("Deployment", ["spec", "template", "spec", "containers", 0, "livenesProbe"], {}),
    ("Service", ["spec", "ports", 0, "port"], "metrics"),
    ("ConfigMap", ["data", "config.yaml"], {"inputs": []}),
    ("PodDisruptionBudget", ["spec", "maxUnavailables"], 1),
    ("ServiceMonitor", ["spec", "endpoints", 0, "interval"], "30 seconds"),
    ("ServiceMonitor", ["spec", "endpoints", 0, "portName"], "metrics"),
    ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "for"], "15 minutes"),
    ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "expresion"], "up"),
    ("PrometheusRule", ["metadata", "labelz"], {}),
]


@pytest.mark.parametrize(
    ("kind", "path", "value"), BROKEN, ids=[f"{k}:{'.'.join(map(str, p))}" for k, p, _ in BROKEN]
)
def test_schema_rejects_a_broken_copy(kind: str, path: list[str | int], value: Any) -> None:
    doc = _broken(kind, path, value)
    if kind in CRD_FILES:
        errors = _crd_errors(doc)
        where = "/".join(map(str, path[:-1]))
        assert any(e.startswith(where) for e in errors), errors
    else:
        with pytest.raises(kubernetes_validate.ValidationError) as caught:
            kubernetes_validate.validate(doc, MIN_KUBERNETES, strict=True)
        assert list(caught.value.absolute_path)[: len(path) - 1] == path[:-1], caught.value


# --- the PrometheusRule is the rules file ---------------------------------------------------


def test_prometheusrule_groups_are_the_rules_file_groups() -> None:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert _kind("PrometheusRule")["spec"]["groups"] == rules["groups"]


def test_generated_prometheusrule_is_up_to_date() -> None:
    committed = (KUBE / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert generate_rules.render(RULES.read_text(encoding="utf-8")) == committed, (
        "deploy/kubernetes/prometheusrule.yaml is stale: run "
        "python deploy/kubernetes/generate_rules.py"
    )


def test_generator_check_mode_as_ci_runs_it() -> None:
    result = subprocess.run(
        [sys.executable, str(KUBE / "generate_rules.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_generator_carries_comments_and_rejects_what_it_cannot_copy() -> None:
    text = RULES.read_text(encoding="utf-8")
    manifest = generate_rules.render(text)
    assert "# Multi-window, multi-burn-rate alerts" in manifest  # comments travel along
    with pytest.raises(generate_rules.GenerateError):
        generate_rules.render(text + "extra: 1\n")
    with pytest.raises(generate_rules.GenerateError):
        generate_rules.render(text.replace("groups:", "groups: []\nrule_groups:", 1))


# --- wiring ---------------------------------------------------------------------------------


def _container() -> dict[str, Any]:
    (container,) = _kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_configmap_holds_the_kafka_example_config() -> None:
    config = yaml.safe_load(_kind("ConfigMap")["data"]["config.yaml"])
    assert config == {
        "inputs": [
            {
                "type": "kafka",
                "bootstrap_servers": "kafka:9092",
                "topics": ["llm-records"],
                "group_id": "llm-drift-exporter",
            }
        ]
    }  # stream_labels: the exporter's default


def test_configmap_config_is_accepted_by_the_exporter() -> None:
    config = parse_config(
        yaml.safe_load(_kind("ConfigMap")["data"]["config.yaml"]), require_inputs=True
    )
    (kafka,) = config.inputs
    assert (kafka.bootstrap_servers, kafka.topics, kafka.group_id) == (
        "kafka:9092",
        ("llm-records",),
        "llm-drift-exporter",
    )


def test_deployment_runs_the_exporter_on_its_config() -> None:
    deployment = _kind("Deployment")
    container = _container()
    assert deployment["spec"]["replicas"] == 3
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert mounts["config"] == str(Path(CONFIG_PATH).parent)
    assert volumes["config"]["configMap"]["name"] == _kind("ConfigMap")["metadata"]["name"]
    assert set(mounts) == set(volumes)
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def test_instance_id_comes_from_the_pod_name() -> None:
    env = {e["name"]: e for e in _container()["env"]}
    assert INSTANCE_ENV == "LLM_DRIFT_EXPORTER_INSTANCE_ID"
    assert env[INSTANCE_ENV]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_probes_use_health_and_readiness_on_the_metrics_port() -> None:
    container = _container()
    (port,) = container["ports"]
    assert port == {"name": "metrics", "containerPort": PORT, "protocol": "TCP"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def test_service_and_pdb_select_the_pods_and_the_monitor_selects_the_service() -> None:
    pod_labels = _kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = _kind("Service")
    assert _matches(_kind("Deployment")["spec"]["selector"]["matchLabels"], pod_labels)
    assert _matches(service["spec"]["selector"], pod_labels)
    assert _matches(_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    monitor = _kind("ServiceMonitor")
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (PORT, "metrics")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [port["name"]]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_scrape_job_name_is_what_exporter_down_watches() -> None:
    """The operator names the job after the Service (no `jobLabel` here)."""
    assert "jobLabel" not in _kind("ServiceMonitor")["spec"]
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    (down,) = [rule for rule in alerts if rule["alert"] == "LLMExporterDown"]
    job_regex = re.search(r'job=~"([^"]+)"', down["expr"]).group(1)
    assert re.fullmatch(job_regex, _kind("Service")["metadata"]["name"])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted({name for name, _ in DOCUMENTS})
