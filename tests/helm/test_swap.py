"""Swapping a generator with `helm upgrade` touches only that generator and the routing table.

No cluster is reachable here, so an upgrade is what helm would apply: the chart rendered (same release name and
namespace) with the release's values, then with the values of the upgrade, and the two compared object by object,
keyed by (apiVersion, kind, namespace, name). An object that differs is one Kubernetes would change: a Deployment
whose pod template differs rolls its pods. The gateway must not be among them: it watches its mounted routing file
and applies a new table without a restart (docs/gateway.md#routing-reloads), so its pod template carries no checksum
of the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modaverse_gateway.metaresponse import OutputModality
from modaverse_gateway.routes import load_routes
from tests.helm.chart import EXAMPLES, FULLNAME, NAMESPACE, Manifest, env_of, main_container, render

Key = tuple[str, str, str, str]

ROUTES = ("v1", "ConfigMap", NAMESPACE, f"{FULLNAME}-routes")
GATEWAY = ("apps/v1", "Deployment", NAMESPACE, f"{FULLNAME}-gateway")
SDXL = f"{FULLNAME}-gen-sdxl"
SD15 = ("apps/v1", "Deployment", NAMESPACE, f"{FULLNAME}-gen-sd15")

# The swap's new generator brings its own objects, and nothing else is added: its Deployment, its headless Service
# (the route's DNS name), its PodDisruptionBudget and, where the base values give generators a claim and KEDA
# autoscaling (full-gpu), its PersistentVolumeClaim and ScaledObject.
SDXL_OBJECTS: dict[str, set[Key]] = {
    "default": {
        ("apps/v1", "Deployment", NAMESPACE, SDXL),
        ("v1", "Service", NAMESPACE, SDXL),
        ("policy/v1", "PodDisruptionBudget", NAMESPACE, SDXL),
    },
    "full-gpu": {
        ("apps/v1", "Deployment", NAMESPACE, SDXL),
        ("v1", "Service", NAMESPACE, SDXL),
        ("policy/v1", "PodDisruptionBudget", NAMESPACE, SDXL),
        ("v1", "PersistentVolumeClaim", NAMESPACE, f"{SDXL}-models"),
        ("keda.sh/v1alpha1", "ScaledObject", NAMESPACE, SDXL),
    },
}


def objects(files: tuple[str, ...], sets: tuple[str, ...] = ()) -> dict[Key, Manifest]:
    keyed: dict[Key, Manifest] = {}
    for doc in render(files, sets).docs:
        key = (doc["apiVersion"], doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        assert key not in keyed, f"rendered twice: {key}"
        keyed[key] = doc
    return keyed


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths of the leaves that differ; lists of named items (containers, env, volumes) are matched by name."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            diff
            for key in sorted(set(before) | set(after), key=str)
            for diff in differences(before.get(key), after.get(key), f"{path}.{key}")
        ]
    if isinstance(before, list) and isinstance(after, list) and _named(before) and _named(after):
        by_name = ({i["name"]: i for i in before}, {i["name"]: i for i in after})
        return [
            diff
            for name in sorted(set(by_name[0]) | set(by_name[1]))
            for diff in differences(by_name[0].get(name), by_name[1].get(name), f"{path}[{name}]")
        ]
    return [] if before == after else [path]


def _named(items: list[Any]) -> bool:
    return all(isinstance(i, dict) and "name" in i for i in items)


def upgrade(base: str, *sets: str, files: tuple[str, ...] = ()) -> tuple[dict[Key, Manifest], dict[Key, Manifest]]:
    """The release's objects, and those after `helm upgrade` with ``files`` layered on its values (and ``sets``)."""
    return objects(EXAMPLES[base]), objects(EXAMPLES[base] + files, tuple(sets))


def changed(before: dict[Key, Manifest], after: dict[Key, Manifest]) -> set[Key]:
    return {key for key in before.keys() & after.keys() if before[key] != after[key]}


def routes_table(docs: dict[Key, Manifest], tmp_path: Path) -> Any:
    path = tmp_path / "routes.yaml"
    path.write_text(docs[ROUTES]["data"]["routes.yaml"])
    return load_routes(path, "")


@pytest.mark.parametrize("base", sorted(SDXL_OBJECTS))
def test_swap_image_upgrade_changes_only_the_new_generator_and_the_routes(base: str, tmp_path: Path) -> None:
    before, after = upgrade(base, files=("values-swap-image.yaml",))
    assert set(after) - set(before) == SDXL_OBJECTS[base]
    for key in SDXL_OBJECTS[base]:
        assert after[key]["metadata"]["labels"]["modaverse.io/generator"] == "sdxl", key
    assert set(before) - set(after) == set()
    # Every other object stays as it was, pod templates included (annotations, env, volumes): no other workload
    # rolls, the gateway's pods neither (the table is a file it watches, not a checksum in its pod template).
    assert changed(before, after) == {ROUTES}, {
        key: differences(before[key], after[key]) for key in changed(before, after)
    }
    gateway_annotations = after[GATEWAY]["spec"]["template"]["metadata"].get("annotations", {})
    assert not [k for k in gateway_annotations if k.startswith("checksum/")], gateway_annotations
    assert differences(before[ROUTES], after[ROUTES]) == [".data.routes.yaml"]

    # What the gateway reads from the new table: SDXL is the image default; SD 1.5 stays routable by name.
    old, new = routes_table(before, tmp_path), routes_table(after, tmp_path)
    assert old.resolve(OutputModality.IMAGE).name == "sd15"
    assert new.resolve(OutputModality.IMAGE).name == "sdxl"
    assert new.resolve(OutputModality.IMAGE, "sd15").endpoints == old.resolve(OutputModality.IMAGE, "sd15").endpoints
    assert new.routes["sdxl"].model == "stabilityai/stable-diffusion-xl-base-1.0"
    assert new.routes["sdxl"].endpoints == (f"dns:///{SDXL}.{NAMESPACE}.svc.cluster.local:50053",)
    assert {name: new.routes[name] for name in old.routes if name != "sd15"} == {
        name: route for name, route in old.routes.items() if name != "sd15"
    }
    env = env_of(main_container(after[("apps/v1", "Deployment", NAMESPACE, SDXL)]))
    assert env["MODAVERSE_GENERATOR_MODEL"].endswith("stabilityai/stable-diffusion-xl-base-1.0")
    assert env["MODAVERSE_DEFAULT_WIDTH"] == "1024"


@pytest.mark.parametrize("base", sorted(SDXL_OBJECTS))
def test_replacing_a_model_in_place_rolls_only_that_generator(base: str) -> None:
    """`--set generators.sd15.model=…`: the sd15 Deployment rolls (its model, and what its init container downloads)
    and the table names the new model; nothing else changes, the gateway included."""
    model = "stabilityai/sdxl-turbo"
    before, after = upgrade(base, f"generators.sd15.model={model}")
    assert set(before) == set(after)
    assert changed(before, after) == {SD15, ROUTES}
    template = ".spec.template.spec"
    expected = {f"{template}.containers[generator].env[MODAVERSE_GENERATOR_MODEL].value"}
    if base == "full-gpu":  # the chart downloads the model there
        expected.add(f"{template}.initContainers[download-models].env[MODAVERSE_DOWNLOADS].value")
    assert set(differences(before[SD15], after[SD15])) == expected
    assert env_of(main_container(after[SD15]))["MODAVERSE_GENERATOR_MODEL"].endswith(model)
    table = yaml.safe_load(after[ROUTES]["data"]["routes.yaml"])["generators"]
    assert table["sd15"]["model"] == model
