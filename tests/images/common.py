"""What tests/images share: scripts/images.py as a module, the chart's values read with PyYAML, and the
Dockerfiles parsed by dockerfile-parse into stages."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "modaverse"
SKIP_DIRS = {".git", ".tools", "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


@functools.cache
def images_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("modaverse_images_script", ROOT / "scripts" / "images.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def chart_values(name: str = "values.yaml") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / name).read_text())
    return loaded


def app_version() -> str:
    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


def yaml_image_repositories(values: Any, path: str = "") -> list[tuple[str, str]]:
    """(block path of the `image` mapping, repository), walking the parsed YAML."""
    found: list[tuple[str, str]] = []
    if isinstance(values, dict):
        for key, value in values.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "image" and isinstance(value, dict) and "repository" in value:
                found.append((here, str(value["repository"])))
            found += yaml_image_repositories(value, here)
    elif isinstance(values, list):
        for item in values:
            found += yaml_image_repositories(item, path)
    return found


def every_dockerfile() -> set[str]:
    """Every Dockerfile in the repository (Dockerfile, Dockerfile.*, *.Dockerfile), outside virtualenvs and tools."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".venv")]
        for name in filenames:
            if name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
                found.add((Path(dirpath) / name).relative_to(ROOT).as_posix())
    return found


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, value)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.instructions if i == instruction]


@dataclass
class Dockerfile:
    path: str
    global_args: dict[str, str | None]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise AssertionError(f"{self.path} has no stage {name}; it has {[s.name for s in self.stages]}")

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages of this file it is built FROM, base first."""
        stage = self.stage(name)
        names = {s.name for s in self.stages}
        parents = self.chain(stage.base) if stage.base in names else []
        return [*parents, stage]


def parse_dockerfile(rel: str) -> Dockerfile:
    parser = DockerfileParser(str(ROOT / rel))
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for item in parser.structure:
        instruction, value = str(item["instruction"]), str(item["value"])
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(name, words[0]))
        elif not stages:
            assert instruction == "ARG", f"{rel}: {instruction} before the first FROM"
            key, _, default = value.partition("=")
            global_args[key] = default if "=" in value else None
        else:
            stages[-1].instructions.append((instruction, value))
    return Dockerfile(rel, global_args, stages)


def image_chain(rel: str, target: str | None) -> list[tuple[str, Stage]]:
    """(Dockerfile, stage) of every stage an image is built from, base first, across files: the target, the stages
    of its file it is built FROM, and, where the first of them starts FROM a shared stage (``${CPU_BASE}``, …), that
    shared Dockerfile's last stage (what scripts/images.py builds, no --target) and its own chain before it."""
    dockerfile = parse_dockerfile(rel)
    last = dockerfile.stage(target) if target is not None else dockerfile.stages[-1]
    chain = [*(dockerfile.chain(last.base) if last.base in {s.name for s in dockerfile.stages} else []), last]
    shared = {f"${{{s.arg}}}": s.dockerfile for s in images_script().SHARED}
    before = image_chain(shared[chain[0].base], None) if chain[0].base in shared else []
    return [*before, *((rel, stage) for stage in chain)]


def stage_arg_default(stage: Stage, name: str) -> str:
    for value in stage.values("ARG"):
        key, _, default = value.partition("=")
        if key == name and default:
            return default
    raise AssertionError(f"no ARG {name}=<default> in stage {stage.name}")
