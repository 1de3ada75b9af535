"""`make images` / `make push` (scripts/images.py) with a fake builder on PATH that records its arguments: exact tags,
build order and build-args, the choice of builder, push, failures, and the message when no builder exists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images.common import ROOT, app_version, chart_values, images_script, yaml_image_repositories

V = app_version()
BUILD = f"localhost/modaverse/build:{V}"
CPU = f"localhost/modaverse/cpu-base:{V}"
GPU = f"localhost/modaverse/gpu-base:{V}"
BUILD_ARGS = ("--build-arg", f"BUILD_IMAGE={BUILD}")
CPU_ARGS = (*BUILD_ARGS, "--build-arg", f"CPU_BASE={CPU}")
GPU_ARGS = (*BUILD_ARGS, "--build-arg", f"GPU_BASE={GPU}")

# What `make images` runs with docker and no options: the shared stages (the build stage, then the two bases built
# from it), then the chart's images in the order the chart names them (values.yaml, then the examples:
# values-full-gpu.yaml's vLLM variant).
SHARED_BUILDS = 3


def build(dockerfile: str, ref: str, target: str | None = None, args: tuple[str, ...] = ()) -> list[str]:
    return ["build", "-f", dockerfile, "-t", ref, *(["--target", target] if target else []), *args, "."]


EXPECTED_DOCKER_BUILDS = [
    build("docker/build.Dockerfile", BUILD),
    build("docker/cpu.Dockerfile", CPU, args=BUILD_ARGS),
    build("docker/gpu.Dockerfile", GPU, args=BUILD_ARGS),
    build("services/encoder/Dockerfile", f"modaverse/encoder:{V}", "encoder", GPU_ARGS),
    build("services/llm/Dockerfile", f"modaverse/llm:{V}", "llm", GPU_ARGS),
    build("services/gateway/Dockerfile", f"modaverse/gateway:{V}", "gateway", CPU_ARGS),
    build("services/web/Dockerfile", f"modaverse/web:{V}", "web", CPU_ARGS),
    build("services/generators/Dockerfile", f"modaverse/generators:{V}", "generators", GPU_ARGS),
    build("services/llm/Dockerfile", f"modaverse/llm-vllm:{V}", "vllm", GPU_ARGS),
]
CHART_REPOSITORIES = [
    "modaverse/encoder",
    "modaverse/llm",
    "modaverse/gateway",
    "modaverse/web",
    "modaverse/generators",
    "modaverse/llm-vllm",
]

FAKE = """#!{python}
import json, os, sys
with open({log!r}, "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
fail = os.environ.get("FAKE_FAIL_ON")
sys.exit(3 if fail and fail in sys.argv else 0)
"""


def fake_builders(tmp_path: Path, *kinds: str) -> tuple[Path, Path]:
    """A bin folder holding a fake of each builder kind (each appends [its name, *args] to the log)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir(exist_ok=True)
    for kind in kinds:
        fake = bin_dir / kind
        fake.write_text(FAKE.format(python=sys.executable, log=str(log)))
        fake.chmod(0o755)
    return bin_dir, log


def calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def run_script(bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/images.py with PATH holding only bin_dir: no real builder on this machine can be reached."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "images.py"), *args],
        cwd=ROOT,
        env={"PATH": str(bin_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_expected_images_are_those_the_chart_names() -> None:
    """The literal lists above are the chart's repositories (values.yaml and its examples, read by PyYAML)."""
    named: list[str] = []
    for name in ["values.yaml", *sorted(p.name for p in (ROOT / "helm" / "modaverse").glob("values-*.yaml"))]:
        named += [r for _, r in yaml_image_repositories(chart_values(name)) if r not in named]
    assert named == CHART_REPOSITORIES
    assert [c[4].rsplit(":", 1)[0] for c in EXPECTED_DOCKER_BUILDS[SHARED_BUILDS:]] == CHART_REPOSITORIES


def test_docker_builds_every_image_with_the_chart_names_and_version_in_order(tmp_path: Path) -> None:
    bin_dir, log = fake_builders(tmp_path, "docker")
    proc = run_script(bin_dir, "build")
    assert proc.returncode == 0, proc.stderr
    assert calls(log) == [["docker", *c] for c in EXPECTED_DOCKER_BUILDS]
    for call in EXPECTED_DOCKER_BUILDS:
        assert (ROOT / call[2]).is_file()
    assert "global.imageRegistry" not in proc.stdout  # the chart's defaults pull exactly these


def test_registry_and_tag_name_every_pushed_image_and_tag_the_shared_stages(tmp_path: Path) -> None:
    bin_dir, log = fake_builders(tmp_path, "docker")
    proc = run_script(bin_dir, "build", "--registry", "registry.example.com/team/", "--tag", "1.2.3-rc1")
    assert proc.returncode == 0, proc.stderr
    tags = [c[c.index("-t") + 1] for c in calls(log)]
    assert tags == [
        "localhost/modaverse/build:1.2.3-rc1",
        "localhost/modaverse/cpu-base:1.2.3-rc1",
        "localhost/modaverse/gpu-base:1.2.3-rc1",
        *(f"registry.example.com/team/{r}:1.2.3-rc1" for r in CHART_REPOSITORIES),
    ]
    assert all(
        a.endswith(":1.2.3-rc1")
        for c in calls(log)
        for a in c
        if a.startswith(("BUILD_IMAGE=", "CPU_BASE=", "GPU_BASE="))
    )
    # How to make the chart pull them: the registry prefix and each block's tag.
    assert "--set global.imageRegistry=registry.example.com/team/" in proc.stdout
    for block in ("encoder", "llm", "gateway", "web", "generatorDefaults"):
        assert f"--set {block}.image.tag=1.2.3-rc1" in proc.stdout


@pytest.mark.parametrize(
    ("present", "used", "verb"),
    [
        (("podman",), "podman", ["build"]),
        (("buildah",), "buildah", ["bud", "--layers"]),
        (("podman", "buildah", "docker"), "docker", ["build"]),
        (("buildah", "podman"), "podman", ["build"]),
    ],
)
def test_the_first_builder_found_of_docker_podman_buildah_builds(
    tmp_path: Path, present: tuple[str, ...], used: str, verb: list[str]
) -> None:
    bin_dir, log = fake_builders(tmp_path, *present)
    proc = run_script(bin_dir, "build")
    assert proc.returncode == 0, proc.stderr
    assert calls(log) == [[used, *verb, *c[1:]] for c in EXPECTED_DOCKER_BUILDS]
    assert f"with {used}" in proc.stdout


def test_push_pushes_the_chart_images_only(tmp_path: Path) -> None:
    bin_dir, log = fake_builders(tmp_path, "podman")
    proc = run_script(bin_dir, "push", "--registry", "registry.example.com")
    assert proc.returncode == 0, proc.stderr
    assert calls(log) == [["podman", "push", f"registry.example.com/{r}:{V}"] for r in CHART_REPOSITORIES]


def test_only_builds_the_shared_stages_an_image_needs(tmp_path: Path) -> None:
    bin_dir, log = fake_builders(tmp_path, "docker")
    proc = run_script(bin_dir, "build", "--only", "gateway", "--only", "modaverse/web")
    assert proc.returncode == 0, proc.stderr
    wanted = ("localhost/modaverse/build", "localhost/modaverse/cpu-base", "modaverse/gateway", "modaverse/web")
    assert calls(log) == [["docker", *c] for c in EXPECTED_DOCKER_BUILDS if c[4].split(":")[0] in wanted]
    log.unlink()
    # A GPU image needs the GPU base and, through it, the build stage; not the CPU base.
    proc = run_script(bin_dir, "build", "--only", "llm")
    assert proc.returncode == 0, proc.stderr
    gpu_only = ("localhost/modaverse/build", "localhost/modaverse/gpu-base", "modaverse/llm")
    assert calls(log) == [["docker", *c] for c in EXPECTED_DOCKER_BUILDS if c[4].split(":")[0] in gpu_only]
    proc = run_script(bin_dir, "build", "--only", "nonesuch")
    assert proc.returncode == 1
    assert "ONLY=nonesuch" in proc.stderr
    assert "modaverse/gateway" in proc.stderr


def test_no_builder_says_so_and_builds_nothing(tmp_path: Path) -> None:
    bin_dir, log = fake_builders(tmp_path)  # an empty PATH
    for command in ("build", "push"):
        proc = run_script(bin_dir, command)
        assert proc.returncode == 1
        assert "no container builder found" in proc.stderr
        assert "docker, podman and buildah" in proc.stderr
        assert "BUILDER=" in proc.stderr
    assert calls(log) == []


def test_a_failed_build_stops_and_names_the_image(tmp_path: Path) -> None:
    bin_dir, log = fake_builders(tmp_path, "docker")
    proc = run_script(bin_dir, "build", FAKE_FAIL_ON=f"modaverse/llm:{V}")
    assert proc.returncode == 1
    assert f"building modaverse/llm:{V} failed: docker exited with 3" in proc.stderr
    assert calls(log) == [["docker", *c] for c in EXPECTED_DOCKER_BUILDS[: SHARED_BUILDS + 2]]


def test_make_images_and_push_pass_registry_tag_builder_and_only(tmp_path: Path) -> None:
    make = shutil.which("make")
    assert make is not None, "make is not installed"
    bin_dir, log = fake_builders(tmp_path, "podman")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": str(empty), "HOME": str(tmp_path)}  # the builder only through BUILDER=
    args = [f"PYTHON={sys.executable}", f"BUILDER={bin_dir / 'podman'}", "REGISTRY=r.example.com/x", "TAG=7.0"]
    for target in ("images", "push"):
        proc = subprocess.run(
            [make, "-s", target, *args, "ONLY=gateway web"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
    assert [(c[1], c[c.index("-t") + 1] if "-t" in c else c[2]) for c in calls(log)] == [
        ("build", "localhost/modaverse/build:7.0"),
        ("build", "localhost/modaverse/cpu-base:7.0"),
        ("build", "r.example.com/x/modaverse/gateway:7.0"),
        ("build", "r.example.com/x/modaverse/web:7.0"),
        ("push", "r.example.com/x/modaverse/gateway:7.0"),
        ("push", "r.example.com/x/modaverse/web:7.0"),
    ]
    proc = subprocess.run(
        [make, "-s", "images", f"PYTHON={sys.executable}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "make images: no container builder found" in proc.stderr


def test_bad_registry_tag_and_builder_are_refused_before_building(tmp_path: Path) -> None:
    bin_dir, log = fake_builders(tmp_path, "docker")
    for args, message in [
        (["--registry", "https://registry.example.com"], "--registry"),
        (["--tag", "1.0/evil"], "not a valid image tag"),
        (["--builder", "kaniko"], "expected docker, podman or buildah"),
        (["--builder", str(tmp_path / "missing" / "docker")], "not found"),
    ]:
        proc = run_script(bin_dir, "build", *args)
        assert proc.returncode == 1, args
        assert message in proc.stderr
    assert calls(log) == []


def copy_build_inputs(dest: Path) -> Path:
    """The files scripts/images.py reads (chart values, Chart.yaml, Dockerfiles), copied to play with."""
    for pattern in ("helm/modaverse/Chart.yaml", "helm/modaverse/values*.yaml", "services/*/Dockerfile", "docker/*"):
        for src in ROOT.glob(pattern):
            target = dest / src.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)
    return dest


def test_a_chart_image_without_a_dockerfile_or_a_label_the_chart_does_not_name_is_an_error(tmp_path: Path) -> None:
    images = images_script()
    root = copy_build_inputs(tmp_path)
    assert [b.ref for b in images.plan(root=root)] == [c[4] for c in EXPECTED_DOCKER_BUILDS]

    example = root / "helm" / "modaverse" / "values-extra.yaml"
    example.write_text("generators:\n  sdxl:\n    image: {repository: modaverse/sdxl, tag: ''}\n")
    with pytest.raises(images.ImagesError, match=r"names modaverse/sdxl but no services/\*/Dockerfile stage"):
        images.plan(root=root)
    example.unlink()

    dockerfile = root / "services" / "gateway" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace('"modaverse/gateway"', '"modaverse/gateways"'))
    with pytest.raises(images.ImagesError) as refused:
        images.plan(root=root)
    assert "modaverse/gateway but no" in str(refused.value)
    dockerfile.write_text(dockerfile.read_text().replace('"modaverse/gateways"', '"modaverse/gateway"'))

    web = root / "services" / "web" / "Dockerfile"
    web.write_text(web.read_text() + '\nFROM web AS debug\nLABEL io.modaverse.image="modaverse/web-debug"\n')
    with pytest.raises(images.ImagesError, match=r"services/web/Dockerfile \(debug\) labelled modaverse/web-debug"):
        images.plan(root=root)


def test_a_shared_stage_that_takes_one_built_after_it_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bases are built FROM the build stage, so SHARED's order is the build order: a wrong one is refused."""
    images = images_script()
    root = copy_build_inputs(tmp_path)
    monkeypatch.setattr(images, "SHARED", tuple(reversed(images.SHARED)))
    with pytest.raises(images.ImagesError, match="takes BUILD_IMAGE, which SHARED does not build before it"):
        images.plan(root=root)


def test_the_tag_follows_the_charts_app_version(tmp_path: Path) -> None:
    images = images_script()
    root = copy_build_inputs(tmp_path)
    chart = root / "helm" / "modaverse" / "Chart.yaml"
    chart.write_text(chart.read_text().replace(f'appVersion: "{V}"', 'appVersion: "9.8.7"'))
    refs = [b.ref for b in images.plan(root=root)]
    assert refs[0] == "localhost/modaverse/build:9.8.7"
    assert "modaverse/generators:9.8.7" in refs


def test_the_values_reader_agrees_with_pyyaml_on_every_values_file() -> None:
    images = images_script()
    files = sorted((ROOT / "helm" / "modaverse").glob("values*.yaml"))
    assert len(files) >= 4
    for file in files:
        assert images.image_repositories(file.read_text()) == yaml_image_repositories(chart_values(file.name)), file


@pytest.mark.parametrize(
    "text",
    [
        "a:\n  image:\n    repository: x/one  # a comment\n    tag: ''\n  image2: {repository: no}\n",
        "# image:\n#   repository: commented/out\nb:\n  image: {repository: 'x/two', tag: \"1\"}\n",
        'list:\n  - name: n\n    image:\n      repository: "x/three"\nc:\n  image:\n    tag: only\n',
        "top:\n  nested:\n    deeper:\n      image:\n        pullPolicy: Always\n        repository: x/four\n",
        'd:\n  image: ""\n  other:\n    repository: not/an-image\n',
    ],
)
def test_the_values_reader_agrees_with_pyyaml_on_other_layouts(text: str) -> None:
    import yaml

    assert images_script().image_repositories(text) == yaml_image_repositories(yaml.safe_load(text))


def test_it_needs_only_the_standard_library() -> None:
    """`make images` runs it with the system python3, no virtualenv: it imports nothing outside the stdlib."""
    source = (ROOT / "scripts" / "images.py").read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    assert os.access(ROOT / "scripts" / "images.py", os.R_OK)
