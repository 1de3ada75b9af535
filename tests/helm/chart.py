"""Rendering and validating the chart with the real tools that `make helm-tools` installs into .tools/ and .venv.

A missing tool FAILS the test (naming `make helm-tools`); nothing here skips.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.dts import load_shape, unknown_fields

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "modaverse"
TOOLS = ROOT / ".tools"
HELM = Path(os.environ.get("MODAVERSE_HELM", str(TOOLS / "helm" / "helm")))
NODE_MODULES = TOOLS / "node_modules"
CRD_VALIDATOR = Path(__file__).resolve().parent / "validate_crds.mjs"
KUBE_VERSION = "1.35.0"
RELEASE = "mv"
NAMESPACE = "ml"
FULLNAME = f"{RELEASE}-modaverse"
INSTALL_HINT = "run `make helm-tools` (installs helm, kubernetes-validate and the CRD validators)"

# Example values files, by name, as the -f list each one is installed with.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "default": (),
    "tiny-cpu": ("values-tiny-cpu.yaml",),
    "full-gpu": ("values-full-gpu.yaml",),
    "swap-image": ("values-full-gpu.yaml", "values-swap-image.yaml"),
}

Manifest = dict[str, Any]


def helm_binary() -> Path:
    if not (HELM.is_file() and os.access(HELM, os.X_OK)):
        pytest.fail(f"helm not found at {HELM}: {INSTALL_HINT}")
    return HELM


def kubernetes_validate() -> Any:
    """The kubernetes_validate module (imported lazily: `make lint` must pass before helm-tools ran)."""
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        pytest.fail(f"kubernetes-validate is not installed in this virtualenv: {INSTALL_HINT}")


def node_validator() -> tuple[str, Path]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js) is not on PATH: the KEDA / ServiceMonitor validators need it")
    for package in ("keda", "prometheus-operator"):
        if not (NODE_MODULES / "@kubernetes-models" / package).is_dir():
            pytest.fail(f"@kubernetes-models/{package} not found under {NODE_MODULES}: {INSTALL_HINT}")
    return node, NODE_MODULES


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _template_args(files: tuple[str, ...], sets: tuple[str, ...]) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for name in files:
        args += ["-f", str(CHART / name)]
    for item in sets:
        args += ["--set", item]
    return args


@dataclass(frozen=True)
class Rendered:
    docs: tuple[Manifest, ...]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Manifest:
        for doc in self.docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
        raise AssertionError(f"no {kind} {name}; have {sorted(self.names(kind))}")

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind)}

    def keyed(self) -> dict[tuple[str, str], Manifest]:
        return {(d["kind"], d["metadata"]["name"]): d for d in self.docs}


@functools.cache
def render(files: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> Rendered:
    out = helm(*_template_args(files, sets)).stdout
    docs = tuple(d for d in yaml.safe_load_all(out) if d)
    return Rendered(docs)


def render_example(name: str, *sets: str) -> Rendered:
    return render(EXAMPLES[name], tuple(sets))


def render_error(*sets: str, files: tuple[str, ...] = ()) -> str:
    """Renders values that must be refused; returns helm's error output."""
    proc = helm(*_template_args(files, tuple(sets)), check=False)
    assert proc.returncode != 0, f"helm accepted {sets}:\n{proc.stdout[:2000]}"
    return proc.stderr


def containers(deployment: Manifest) -> list[Manifest]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def main_container(deployment: Manifest) -> Manifest:
    first: Manifest = deployment["spec"]["template"]["spec"]["containers"][0]
    return first


def env_of(container: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def iter_pod_templates(rendered: Rendered) -> Iterator[tuple[Manifest, Manifest]]:
    for dep in rendered.of_kind("Deployment"):
        yield dep, dep["spec"]["template"]


CRD_DECLARATIONS = {
    "keda.sh/v1alpha1/ScaledObject": "keda/keda.sh/v1alpha1/ScaledObject.d.ts",
    "monitoring.coreos.com/v1/ServiceMonitor": "prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.d.ts",
}


def crd_unknown_fields(doc: Manifest) -> list[str]:
    """Keys of a custom resource that its declared type does not have (see dts.py)."""
    _, modules = node_validator()
    declaration = modules / "@kubernetes-models" / CRD_DECLARATIONS[f"{doc['apiVersion']}/{doc['kind']}"]
    return unknown_fields(doc, load_shape(declaration, modules))


def validate_crds(docs: list[Manifest]) -> list[str | None]:
    node, modules = node_validator()
    proc = subprocess.run(
        [node, str(CRD_VALIDATOR), str(modules)],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(f"validate_crds.mjs failed ({proc.returncode}):\n{proc.stderr}")
    results: list[str | None] = json.loads(proc.stdout)
    return results
