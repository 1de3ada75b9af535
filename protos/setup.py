"""Build hook for modaverse-protos: the Python stubs are generated from the .proto files at build time.

Wheels (``pip install ./protos``, ``python -m build protos``, a git ``#subdirectory=protos`` install,
a build from the sdist) run ``grpc_tools.protoc`` with the mypy-protobuf plugins and ship
``*_pb2.py``, ``*_pb2_grpc.py`` and their ``.pyi`` stubs; nothing generated is committed or put in the
sdist. The generator versions are pinned in ``[build-system] requires`` (pyproject.toml), and the build
fails if the generated code would need a newer protobuf/grpcio than ``[project] dependencies`` allow.

An editable install (``pip install -e protos``) generates into the source tree, as ``make protos`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE = "modaverse_protos"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _plugin(name: str, entry: str, tmp: Path) -> str:
    """A protoc plugin executable running mypy-protobuf's ``entry`` with this very interpreter (the one that
    has the pinned build requirements), whatever is on PATH; the installed console script elsewhere."""
    if os.name == "posix":
        script = tmp / name
        code = f"import sys; from mypy_protobuf.main import {entry}; sys.exit({entry}())"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "{code}"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return str(script)
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError(f"{name} not found: install mypy-protobuf (a build requirement of modaverse-protos)")
    return found


def _check_runtime_bounds(out: Path) -> None:
    """The generated code refuses to import on an older protobuf/grpcio than the one that generated it:
    fail the build, not the user's import, if the declared dependencies allow such a version."""
    import tomllib  # here, not at the top: on Python < 3.11 pip must get as far as requires-python

    deps = " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    pb_floor = re.search(r"protobuf>=([\d.]+)", deps)
    grpc_floor = re.search(r"grpcio>=([\d.]+)", deps)
    pb2 = next(out.glob(f"{PACKAGE}/*/v1/*_pb2.py")).read_text()
    grpc_py = next(out.glob(f"{PACKAGE}/*/v1/*_pb2_grpc.py")).read_text()
    pb_needed = re.search(r"Protobuf Python Version: ([\d.]+)", pb2)
    grpc_needed = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_py)
    for what, needed, floor in (("protobuf", pb_needed, pb_floor), ("grpcio", grpc_needed, grpc_floor)):
        if needed is None or floor is None:
            raise RuntimeError(f"cannot check the {what} bound of the generated code (declared: {deps})")
        if _version(needed.group(1)) > _version(floor.group(1)):
            raise RuntimeError(
                f"the generated code needs {what}>={needed.group(1)} but pyproject.toml declares {what}>="
                f"{floor.group(1)}: build with the pinned grpcio-tools or raise the bound"
            )


def generate(out: Path) -> list[Path]:
    """Run protoc on every ``modaverse_protos/<svc>/v1/*.proto`` (paths relative to this folder, as the
    imports between them are written), writing the stubs under ``out``."""
    protos = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / PACKAGE).glob("*/v1/*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {ROOT / PACKAGE}")
    with tempfile.TemporaryDirectory(prefix="modaverse-protoc-") as tmp:
        mypy = _plugin("protoc-gen-mypy", "main", Path(tmp))
        mypy_grpc = _plugin("protoc-gen-mypy_grpc", "grpc", Path(tmp))
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",  # adds the well-known types' include path itself
            "-I",
            ".",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            f"--plugin=protoc-gen-mypy={mypy}",
            f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}",
            *protos,
        ]
        subprocess.run(cmd, cwd=ROOT, check=True)
    _check_runtime_bounds(out)
    return sorted(out.glob(f"{PACKAGE}/*/v1/*_pb2*.py*"))


class BuildPyWithStubs(build_py):
    """``build_py`` plus the generated stubs (into the wheel's tree; into the sources when editable)."""

    def run(self) -> None:
        super().run()
        out = ROOT if self.editable_mode else Path(self.build_lib)
        out.mkdir(parents=True, exist_ok=True)
        for path in generate(out):
            self.announce(f"generated {path.relative_to(out)}", level=2)


setup(cmdclass={"build_py": BuildPyWithStubs})
