"""The SDK's packaging: what it depends on, what it imports, and one version for it and the contracts."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import modaverse
import modaverse_protos
from modaverse.cli import version_text

ROOT = Path(__file__).resolve().parents[3]
SDK_SRC = ROOT / "sdk" / "src" / "modaverse"
SERVER_SIDE: tuple[str, ...] = ("modaverse_runtime", "modaverse_encoder", "modaverse_llm", "modaverse_generators")
SERVER_SIDE += ("modaverse_gateway", "modaverse_training", "torch", "diffusers", "transformers", "imagebind", "PIL")
SERVER_SIDE += ("pydantic",)


def pyproject(package: str) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    return project


def sdk_requirements(pin: bool) -> list[str]:
    """What sdk/setup.py declares: pinned (make dist, make install) or from a checkout."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sdk_setup", ROOT / "sdk" / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: list[str] = module.requirements(pin)
    return found


def requirement_names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {re.split(r"[<>=!~ @\[;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_sdk_and_contracts_are_released_at_one_version() -> None:
    sdk = pyproject("sdk")
    assert pyproject("protos")["dynamic"] == ["version"]  # read from modaverse_protos.__version__
    assert sdk["version"] == modaverse_protos.__version__
    assert f"modaverse-protos=={modaverse_protos.__version__}" in sdk_requirements(pin=True)
    # From a checkout, the contracts are the protos folder beside the SDK: `pip install ./sdk` alone works.
    assert f"modaverse-protos @ {(ROOT / 'protos').as_uri()}" in sdk_requirements(pin=False)
    assert modaverse.__version__ == modaverse.API_VERSION == modaverse_protos.__version__
    assert version_text().splitlines() == [
        f"modaverse {modaverse.__version__}",
        f"modaverse-protos {modaverse_protos.__version__} (API version)",
    ]


def test_sdk_depends_on_the_contracts_and_grpc_only() -> None:
    for pin in (True, False):
        names = requirement_names(sdk_requirements(pin))
        assert names == {"modaverse-protos", "grpcio", "grpcio-health-checking", "protobuf", "numpy"}


def test_the_stub_generator_pins_match_the_dev_environment_and_the_runtime_bounds() -> None:
    build = tomllib.loads((ROOT / "protos" / "pyproject.toml").read_text())["build-system"]["requires"]
    dev = [line.strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()]
    for pin in (r for r in build if r.startswith(("grpcio-tools==", "mypy-protobuf=="))):
        assert pin in dev, f"{pin} (protos build) differs from requirements-dev.txt"
    # The generated code checks its protobuf / grpcio at import time: the declared floors must cover it.
    generated = (ROOT / "protos" / "modaverse_protos" / "common" / "v1" / "common_pb2.py").read_text()
    grpc_generated = (ROOT / "protos" / "modaverse_protos" / "common" / "v1" / "common_pb2_grpc.py").read_text()
    protobuf_needed = re.search(r"Protobuf Python Version: ([\d.]+)", generated)
    grpc_needed = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_generated)
    assert protobuf_needed is not None and grpc_needed is not None
    protobuf = protobuf_needed.group(1)
    next_major = int(protobuf.split(".")[0]) + 1  # the generated code accepts its own major version only
    for deps in (pyproject("protos")["dependencies"], sdk_requirements(pin=True)):
        assert isinstance(deps, list)
        assert f"protobuf>={protobuf},<{next_major}" in deps
        assert f"grpcio>={grpc_needed.group(1)}" in deps


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in top))
    return found


# Optional extras, imported only inside the functions that need them (modaverse[cluster], modaverse[eval]).
EXTRAS_ONLY = ("kubernetes", "matplotlib")


def test_no_sdk_module_imports_server_code_or_torch() -> None:
    modules = sorted(SDK_SRC.rglob("*.py"))
    assert SDK_SRC / "evaluation" / "runner.py" in modules  # the subpackages too
    offenders = [
        f"{path.relative_to(SDK_SRC)}: {module}"
        for path in modules
        for module, top in _imports(path)
        if module.split(".")[0] in SERVER_SIDE or (top and module.split(".")[0] in EXTRAS_ONLY)
    ]
    assert offenders == []


def test_importing_the_sdk_and_its_command_loads_nothing_of_the_server_side() -> None:
    code = (
        "import sys, modaverse, modaverse.cli, modaverse.client, modaverse.encoder, modaverse.stack\n"
        "import modaverse.evaluation, modaverse.evaluation.command, modaverse.evaluation.plots\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {(*SERVER_SIDE, *EXTRAS_ONLY)!r})\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_the_plots_are_an_extra_of_the_sdk_and_a_development_dependency() -> None:
    extras = pyproject("sdk")["optional-dependencies"]
    assert isinstance(extras, dict) and extras["eval"] == ["matplotlib>=3.8"]
    dev = [line.strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()]
    assert "matplotlib>=3.8" in dev


def test_py_typed_marks_both_packages() -> None:
    assert (SDK_SRC / "py.typed").exists()
    assert (ROOT / "protos" / "modaverse_protos" / "py.typed").exists()
    package_data = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["modaverse"]
    protos_data = tomllib.loads((ROOT / "protos" / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {"*.pyi", "*.proto", "py.typed"} <= set(protos_data["package-data"]["*"])
