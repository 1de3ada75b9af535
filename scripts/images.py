"""`make images` / `make push`: build and push every container image, named exactly as the Helm chart names them.

One source of truth for the names and the version, the chart (helm/modaverse):

- the repositories are every ``image: {repository: …}`` in ``values.yaml`` and the example ``values-*.yaml`` files
  (an example may name a variant, e.g. ``values-full-gpu.yaml``'s ``modaverse/llm-vllm``);
- the tag is the chart's ``appVersion`` (what ``image.tag: ""`` means to the chart) unless ``--tag`` says otherwise;
- ``--registry`` is what ``global.imageRegistry`` prepends (``registry.example.com/team`` ->
  ``registry.example.com/team/modaverse/encoder:0.1.0``).

Each repository is built from the Dockerfile stage labelled ``io.modaverse.image="<repository>"``
(services/*/Dockerfile; ``--target <stage>``); a repository without such a stage, or a labelled stage the chart does
not name, is an error before anything is built. First come the shared stages, tagged ``localhost/modaverse/…:<tag>``
and never pushed: docker/build.Dockerfile (the wheels of every package; ``BUILD_IMAGE``), then the runtime bases
built from it, docker/cpu.Dockerfile (slim Python; ``CPU_BASE``) and docker/gpu.Dockerfile (Python + the CUDA build
of the torch we test; ``GPU_BASE``), both with the contracts, the runtime and the non-root user installed. A
Dockerfile gets, as build-args, the shared stages whose ARG it declares, and only the shared stages some selected
image needs (directly or through another shared stage) are built. That works alike with docker (its default
builder sees local images), podman and buildah (one local image store): whichever is found first on PATH, in that
order, unless ``--builder`` names one.

Standard library only: it runs with any Python >= 3.11, no virtualenv needed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "modaverse"
LABEL = "io.modaverse.image"
BUILDERS = ("docker", "podman", "buildah")
SERVICE_DOCKERFILES = "services/*/Dockerfile"


@dataclass(frozen=True)
class Shared:
    """A shared stage: built first, passed to the service Dockerfiles as a build-arg, never pushed."""

    arg: str
    repository: str
    dockerfile: str


# In build order: a shared stage may take (ARG) only those above it.
SHARED = (
    Shared("BUILD_IMAGE", "localhost/modaverse/build", "docker/build.Dockerfile"),
    Shared("CPU_BASE", "localhost/modaverse/cpu-base", "docker/cpu.Dockerfile"),
    Shared("GPU_BASE", "localhost/modaverse/gpu-base", "docker/gpu.Dockerfile"),
)


@dataclass(frozen=True)
class Build:
    ref: str
    dockerfile: str  # relative to the repository root, the build context
    target: str | None
    build_args: tuple[tuple[str, str], ...]
    push: bool


@dataclass(frozen=True)
class Stage:
    dockerfile: str
    name: str


class ImagesError(Exception):
    pass


# --- the chart ---------------------------------------------------------------------------------------------------


def app_version(chart: Path = CHART) -> str:
    match = re.search(r"""^appVersion:\s*["']?([^"'\s#]+)""", (chart / "Chart.yaml").read_text(), re.MULTILINE)
    if match is None:
        raise ImagesError(f"{chart / 'Chart.yaml'} has no appVersion")
    return match.group(1)


def _strip_comment(line: str) -> str:
    if line.lstrip().startswith("#"):
        return ""
    return re.sub(r"\s+#.*$", "", line).rstrip()


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def image_repositories(text: str) -> list[tuple[str, str]]:
    """(``block.path.image``, repository) for each ``image`` mapping with a ``repository`` in a values file.

    Reads the block-style YAML of the chart's values files (and ``image: {repository: …}`` written inline) with the
    standard library only; tests/images checks it against PyYAML on every values file of the chart."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        line = _strip_comment(raw)
        match = re.match(r"^(\s*)((?:-\s+)*)([A-Za-z0-9_.\-]+):(?:\s+(.*))?$", line)
        if match is None:
            continue
        indent = len(match.group(1)) + len(match.group(2))
        key, value = match.group(3), (match.group(4) or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join(k for _, k in stack)
        if key == "repository" and stack and stack[-1][1] == "image" and value:
            found.append((path, _scalar(value)))
        elif key == "image" and value.startswith("{"):
            inline = re.search(r"[{,]\s*repository:\s*([^,}]+)", value)
            if inline:
                found.append((f"{path}.image" if path else "image", _scalar(inline.group(1))))
        stack.append((indent, key))
    return found


def values_files(chart: Path = CHART) -> list[Path]:
    """values.yaml first, then the examples in name order."""
    return [chart / "values.yaml", *sorted(chart.glob("values-*.yaml"))]


def chart_images(chart: Path = CHART) -> list[tuple[str, str]]:
    """(values path, repository) of every image the chart or one of its examples names, the first path per
    repository, in file order."""
    seen: dict[str, str] = {}
    for file in values_files(chart):
        for path, repository in image_repositories(file.read_text()):
            seen.setdefault(repository, path)
    return [(path, repository) for repository, path in seen.items()]


# --- the Dockerfiles ---------------------------------------------------------------------------------------------


def _instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments and blank lines dropped."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        out.append(current + stripped)
        current = ""
    if current:
        out.append(current)
    return out


def labelled_stages(root: Path = ROOT) -> dict[str, Stage]:
    """Repository -> the Dockerfile stage that carries ``LABEL io.modaverse.image="<repository>"``."""
    stages: dict[str, Stage] = {}
    for dockerfile in sorted(root.glob(SERVICE_DOCKERFILES)):
        rel = dockerfile.relative_to(root).as_posix()
        stage: str | None = None
        for instruction in _instructions(dockerfile.read_text()):
            word, _, rest = instruction.partition(" ")
            if word.upper() == "FROM":
                named = re.search(r"\s+as\s+(\S+)\s*$", rest, re.IGNORECASE)
                stage = named.group(1) if named else None
            elif word.upper() == "LABEL":
                for match in re.finditer(rf"""{re.escape(LABEL)}=(?:"([^"]*)"|(\S+))""", rest):
                    repository = match.group(1) if match.group(1) is not None else match.group(2)
                    if stage is None:
                        raise ImagesError(f"{rel}: the stage labelled {repository} needs a name (FROM … AS <name>)")
                    if repository in stages:
                        other = stages[repository]
                        raise ImagesError(
                            f"{repository} is labelled twice: {other.dockerfile} ({other.name}), {rel} ({stage})"
                        )
                    stages[repository] = Stage(rel, stage)
    return stages


def declared_args(dockerfile: Path) -> set[str]:
    return {
        m.group(1)
        for instruction in _instructions(dockerfile.read_text())
        if (m := re.match(r"ARG\s+([A-Za-z_][A-Za-z0-9_]*)", instruction, re.IGNORECASE))
    }


# --- the plan ----------------------------------------------------------------------------------------------------


def registry_prefix(registry: str) -> str:
    registry = registry.strip().rstrip("/")
    if not registry:
        return ""
    if "://" in registry or re.search(r"\s", registry):
        raise ImagesError(f"--registry {registry!r}: give a registry host and path, e.g. registry.example.com/team")
    return registry + "/"


def check_tag(tag: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}", tag):
        raise ImagesError(f"--tag {tag!r} is not a valid image tag")
    return tag


def select(repositories: list[str], only: Sequence[str]) -> list[str]:
    if not only:
        return repositories
    chosen: list[str] = []
    for name in only:
        matches = [r for r in repositories if name in (r, r.rsplit("/", 1)[-1])]
        if not matches:
            raise ImagesError(f"ONLY={name}: the chart names no such image; it names {', '.join(repositories)}")
        chosen += [m for m in matches if m not in chosen]
    return [r for r in repositories if r in chosen]


def plan(registry: str = "", tag: str | None = None, only: Sequence[str] = (), root: Path = ROOT) -> list[Build]:
    """Every build, in order: the shared stages that the selected images use, then the chart's images."""
    tag = check_tag(tag or app_version(root / "helm" / "modaverse"))
    prefix = registry_prefix(registry)
    repositories = [repository for _, repository in chart_images(root / "helm" / "modaverse")]
    stages = labelled_stages(root)
    missing = [r for r in repositories if r not in stages]
    if missing:
        raise ImagesError(
            f'the chart names {", ".join(missing)} but no {SERVICE_DOCKERFILES} stage has LABEL {LABEL}="<that name>"'
        )
    unnamed = sorted(set(stages) - set(repositories))
    if unnamed:
        raise ImagesError(
            f"{', '.join(f'{stages[r].dockerfile} ({stages[r].name})' for r in unnamed)} labelled "
            f"{', '.join(unnamed)}, which neither helm/modaverse/values.yaml nor an example values file names"
        )
    selected = select(repositories, only)
    shared_refs = {s.arg: f"{s.repository}:{tag}" for s in SHARED}

    def build_args(dockerfile: str) -> tuple[tuple[str, str], ...]:
        declared = declared_args(root / dockerfile)
        return tuple((name, ref) for name, ref in shared_refs.items() if name in declared)

    services: list[Build] = []
    used: set[str] = set()
    for repository in selected:
        stage = stages[repository]
        args = build_args(stage.dockerfile)
        used.update(name for name, _ in args)
        services.append(Build(f"{prefix}{repository}:{tag}", stage.dockerfile, stage.name, args, push=True))
    # The bases are built FROM the build stage: what a used shared stage takes is used too. Walking SHARED
    # backwards finds all of it in one pass, as long as each takes only those above it (checked here).
    shared: list[Build] = []
    for position in reversed(range(len(SHARED))):
        base = SHARED[position]
        args = build_args(base.dockerfile)
        later = [name for name, _ in args if name not in {s.arg for s in SHARED[:position]}]
        if later:
            raise ImagesError(f"{base.dockerfile} takes {', '.join(later)}, which SHARED does not build before it")
        if base.arg in used:
            used.update(name for name, _ in args)
            shared.insert(0, Build(shared_refs[base.arg], base.dockerfile, None, args, push=False))
    return [*shared, *services]


def helm_hint(registry: str, tag: str | None, root: Path = ROOT) -> str:
    """The helm flags that make the chart pull what was built (empty when its defaults already do)."""
    chart = root / "helm" / "modaverse"
    flags: list[str] = []
    prefix = registry_prefix(registry)
    if prefix:
        flags.append(f"--set global.imageRegistry={prefix}")
    if tag and tag != app_version(chart):
        blocks = [path for path, _ in image_repositories((chart / "values.yaml").read_text())]
        flags += [f"--set {block}.tag={tag}" for block in blocks]
    return " ".join(flags)


# --- the builder -------------------------------------------------------------------------------------------------


def find_builder(explicit: str | None = None) -> tuple[str, str]:
    """(kind, executable): ``explicit`` (a name or a path) or the first of docker, podman, buildah on PATH."""
    if explicit:
        kind = Path(explicit).name
        if kind not in BUILDERS:
            raise ImagesError(f"BUILDER={explicit}: expected docker, podman or buildah (a name or a path)")
        found = shutil.which(explicit)
        if found is None:
            raise ImagesError(f"BUILDER={explicit}: not found or not executable")
        return kind, found
    for kind in BUILDERS:
        found = shutil.which(kind)
        if found is not None:
            return kind, found
    raise ImagesError(
        "no container builder found: looked for docker, podman and buildah on PATH. Install one of them (any "
        "works), or name one with BUILDER=/path/to/docker|podman|buildah. Nothing was built or pushed."
    )


def build_command(kind: str, executable: str, build: Build) -> list[str]:
    # buildah caches layers only when asked; docker and podman always do.
    command = [executable, *(["bud", "--layers"] if kind == "buildah" else ["build"])]
    command += ["-f", build.dockerfile, "-t", build.ref]
    if build.target:
        command += ["--target", build.target]
    for name, value in build.build_args:
        command += ["--build-arg", f"{name}={value}"]
    return [*command, "."]


def push_command(executable: str, ref: str) -> list[str]:
    return [executable, "push", ref]


def _run(command: list[str], what: str) -> None:
    print("+ " + " ".join(command), flush=True)
    code = subprocess.call(command, cwd=ROOT)
    if code != 0:
        raise ImagesError(f"{what} failed: {Path(command[0]).name} exited with {code}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/images.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "push", "list"])
    parser.add_argument("--registry", default="", help="what global.imageRegistry prepends (default: none)")
    parser.add_argument("--tag", default=None, help="default: the chart's appVersion")
    parser.add_argument("--builder", default=None, help="docker, podman or buildah, a name or a path")
    parser.add_argument("--only", action="append", default=[], help="one image (repeatable), e.g. gateway")
    args = parser.parse_args(argv)
    name = {"build": "make images", "push": "make push"}.get(args.command, "scripts/images.py")
    try:
        builds = plan(args.registry, args.tag, args.only)
        if args.command == "list":
            for b in builds:
                target = f" --target {b.target}" if b.target else ""
                print(f"{b.ref}\t{b.dockerfile}{target}{'' if b.push else '  (shared, not pushed)'}")
            return 0
        kind, executable = find_builder(args.builder or None)
        if args.command == "build":
            for b in builds:
                _run(build_command(kind, executable, b), f"building {b.ref}")
        else:
            for b in builds:
                if b.push:
                    _run(push_command(executable, b.ref), f"pushing {b.ref}")
    except ImagesError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    done = "built" if args.command == "build" else "pushed"
    print(f"{name}: {done} {', '.join(b.ref for b in builds if b.push)} with {kind}")
    hint = helm_hint(args.registry, args.tag)
    if hint:
        print(f"{name}: the chart pulls these with: helm install … {hint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
