"""deploy/: the kustomize base and overlay, validated against Kubernetes' schemas.

The overlay is rendered here with the part of kustomize it uses (resources,
namespace, images, labels, strategic-merge patches of maps); a field outside
that part fails the test, so the rendering cannot silently differ from
kustomize's. Every rendered object is then validated by kubernetes-validate
(the API's OpenAPI schemas, strict: unknown fields fail), and the objects are
checked against each other and against the service's settings.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from candlewire.config import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES = "1.31.0"
_SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "labels", "patches"}
_CLUSTER_SCOPED = {"Namespace"}

Object = dict[str, Any]


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return patch


def render(directory: Path) -> list[Object]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - _SUPPORTED
    assert not unsupported, f"{directory}: extend the test's renderer for {unsupported}"
    objects: list[Object] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += render(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, "only strategic-merge patch files"
        change = yaml.safe_load((directory / patch["path"]).read_text())
        target = [
            i
            for i, o in enumerate(objects)
            if (o["kind"], o["metadata"]["name"]) == (change["kind"], change["metadata"]["name"])
        ]
        assert len(target) == 1, f"patch {patch['path']} matches {len(target)} objects"
        objects[target[0]] = _merge(objects[target[0]], change)
    for label in kustomization.get("labels", []):
        assert set(label) == {"pairs"}, "labels: pairs only (not in selectors)"
        for o in objects:
            o["metadata"].setdefault("labels", {}).update(label["pairs"])
    namespace = kustomization.get("namespace")
    if namespace:
        for o in objects:
            if o["kind"] not in _CLUSTER_SCOPED:
                o["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for o in objects:
            for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, _ = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return copy.deepcopy(objects)


BASE = render(DEPLOY / "base")
OVERLAY = render(DEPLOY / "overlays" / "example-redis")


def _find(objects: list[Object], kind: str, name: str) -> Object:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


@pytest.mark.parametrize("objects", [BASE, OVERLAY], ids=["base", "example-redis"])
def test_every_object_is_valid_against_the_kubernetes_schemas(objects: list[Object]) -> None:
    for o in objects:
        kubernetes_validate.validate(o, KUBERNETES, strict=True)


def test_the_deployments_are_as_documented() -> None:
    objects = OVERLAY
    ingest = _find(objects, "Deployment", "candlewire-ingest")
    api = _find(objects, "Deployment", "candlewire-api")
    assert ingest["spec"]["replicas"] == 2  # one holds the lease, one stands by
    config = _find(objects, "ConfigMap", "candlewire")["data"]
    grace = float(config["CANDLEWIRE_SHUTDOWN_GRACE"])
    for deployment in (ingest, api):
        pod = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"]["cpu"]
        assert container["livenessProbe"]["grpc"] == {"port": 50051, "service": ""}
        assert container["readinessProbe"]["grpc"] == {
            "port": 50051,
            "service": "marketdata.v1.MarketDataService",
        }
        assert container["startupProbe"]["grpc"]["port"] == 50051
        assert container["image"] == "registry.example.com/candlewire:0.1.0"
        # A rollout ends streams only after the grace (clients resume elsewhere).
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + 5
        (source,) = container["envFrom"]
        assert source["configMapRef"]["name"] == "candlewire"
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        for secret in secrets:
            _find(objects, "Secret", secret)
    assert ingest["spec"]["template"]["spec"]["containers"][0]["args"] == ["ingest"]
    assert "--role" in api["spec"]["template"]["spec"]["containers"][0]["args"]

    service = _find(objects, "Service", "candlewire")
    assert service["spec"]["selector"].items() <= (
        api["spec"]["template"]["metadata"]["labels"].items()
    )
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"]["appProtocol"] == "grpc" and ports["grpc"]["port"] == 50051
    assert ports["http"]["port"] == 8080
    hpa = _find(objects, "HorizontalPodAutoscaler", "candlewire-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "candlewire-api"
    pdb = _find(objects, "PodDisruptionBudget", "candlewire-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        api["spec"]["template"]["metadata"]["labels"].items()
    )
    assert _find(objects, "Service", "redis")["metadata"]["namespace"] == "candlewire"


def test_the_settings_in_the_config_map_are_valid() -> None:
    for objects in (BASE, OVERLAY):
        data = _find(objects, "ConfigMap", "candlewire")["data"]
        assert all(k.startswith("CANDLEWIRE_") for k in data)
        values = {k.removeprefix("CANDLEWIRE_").lower(): v for k, v in data.items()}
        unknown = set(values) - set(Settings.model_fields)
        assert not unknown, unknown
        Settings(**{**values, "role": "api"})  # raises for an invalid value
