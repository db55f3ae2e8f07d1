"""The deployment files, validated offline: Kubernetes manifests against the 1.37 API schemas
(kubernetes-validate, strict), the compose file against the Compose Specification JSON schema
(vendored: compose_spec.json, see compose_spec.NOTICE) and for its wiring. Docker and a cluster
cannot run here, so nothing is started from them."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="needs pyyaml (the evals extra)")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE_SCHEMA = Path(__file__).with_name("compose_spec.json")


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_every_kubernetes_manifest_passes_strict_schema_validation() -> None:
    validate = pytest.importorskip("kubernetes_validate", reason="needs kubernetes-validate (dev)")
    docs = k8s_documents()
    assert len(docs) == 14
    for doc in docs:
        validate.validate(doc, "1.37.0", strict=True)  # raises on any schema error


def test_a_broken_manifest_is_rejected() -> None:
    validate = pytest.importorskip("kubernetes_validate", reason="needs kubernetes-validate (dev)")
    deployment = next(d for d in k8s_documents() if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(validate.ValidationError):
        validate.validate(deployment, "1.37.0", strict=True)


def test_kubernetes_layout_probes_resources_and_secrets() -> None:
    docs = k8s_documents()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "keel-orchestrator"), ("Deployment", "keel-worker")} <= kinds
    assert {("StatefulSet", n) for n in ("postgres", "redis", "qdrant")} <= kinds
    assert {("Service", n) for n in ("keel", "postgres", "redis", "qdrant", "ray-head")} <= kinds
    assert ("HorizontalPodAutoscaler", "keel-worker") in kinds
    orchestrator = next(d for d in docs if d["metadata"]["name"] == "keel-orchestrator")
    container = orchestrator["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"  # keel.serve's health route
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
                for var in c.get("env", []):
                    if re.search(r"PASSWORD|KEY|TOKEN", var["name"]):
                        assert "secretKeyRef" in var["valueFrom"], var["name"]
    assert not any(d["kind"] == "Secret" for d in docs)  # secrets live in the cluster only


def test_compose_file_structure() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"orchestrator", "ray-head", "worker", "postgres", "redis", "qdrant"}
    volumes = set(compose["volumes"])
    for name, service in services.items():
        assert "image" in service, name
        for mount in service.get("volumes", []):
            assert mount.split(":")[0] in volumes, (name, mount)
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for env_file in service.get("env_file", []):
            assert (DEPLOY / f"{env_file}.example").is_file(), env_file
        for value in service.get("environment", {}).values():
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)), "password in compose"
    assert "/healthz" in " ".join(services["orchestrator"]["healthcheck"]["test"])
    assert services["worker"]["deploy"]["replicas"] >= 1


def compose_errors(document: dict[str, Any]) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema", reason="needs jsonschema (dev)")
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_passes_the_compose_spec_schema_and_a_broken_one_fails() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert compose_errors(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["deploy"]["replicas"] = "two"
    broken["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    errors = compose_errors(broken)
    assert len(errors) == 2 and any("intervall" in e for e in errors)
