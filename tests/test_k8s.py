"""The Kubernetes manifests (k8s/): valid against the Kubernetes 1.30
schemas, and their hotplate command lines accepted by hotplate's own CLI.
They are not applied: this machine has no cluster."""
from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

from hotplate.controller.cli import parser

from .conftest import ROOT

K8S = ROOT / "k8s"


def documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_every_manifest_is_valid_kubernetes():
    docs = documents()
    assert {d["kind"] for _, d in docs} >= {"Deployment", "Service", "StatefulSet", "ConfigMap", "Secret"}
    for path, doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)  # raises with the path of what is wrong


def test_the_pods_run_a_command_hotplate_accepts_with_a_health_probe():
    deployment = next(d for _, d in documents() if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = parser().parse_args(container["args"])  # exits (fails) on an unknown flag
    assert args.command == "up" and args.nats == "nats://nats:4222" and args.store.startswith("redis://")
    assert args.fleet == "etcd://etcd:2379" and args.publish == "http://registry:5000/app" and args.source
    assert container["readinessProbe"]["httpGet"]["path"] == "/_hotplate/ready"  # verified code only
    assert container["livenessProbe"]["httpGet"]["path"] == "/_hotplate/health"
    services = {d["metadata"]["name"] for _, d in documents() if d["kind"] == "Service"}
    assert {"nats", "redis", "etcd", "registry"} <= services  # what the flags name
