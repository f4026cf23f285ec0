"""The deployment files parse and point at things that exist in this repository."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_parses_and_uses_recycler_settings() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "worker"}
    assert services["migrate"]["command"] == ["db", "upgrade"]
    env = services["migrate"]["environment"]
    assert set(env) == {"RECYCLER_REGISTRY", "RECYCLER_BLOBS"}
    assert (ROOT / services["worker"]["entrypoint"][-1]).is_file()
    assert (ROOT / services["worker"]["build"]["dockerfile"]).is_file()


def test_kubernetes_manifests_parse() -> None:
    folder = ROOT / "deploy" / "kubernetes"
    docs = {p.name: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))}
    cluster = docs["raycluster.yaml"]
    assert cluster["kind"] == "RayCluster"
    secret = docs["secret.example.yaml"]["stringData"]
    assert {"RECYCLER_REGISTRY", "RECYCLER_BLOBS"} <= set(secret)
    heads = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert (
        heads[0]["envFrom"][0]["secretRef"]["name"]
        == docs["secret.example.yaml"]["metadata"]["name"]
    )
