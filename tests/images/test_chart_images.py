"""The chart's examples, rendered by helm, pull only images that `make images` builds, under exactly those names;
with the registry and tag `make images` was given, the helm flags it prints make the chart pull what it built."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from tests.helm.chart import EXAMPLES, Rendered, render, render_example
from tests.images.common import ROOT, images_script


def pulled(rendered: Rendered) -> set[str]:
    """The image of every container and init container of every rendered pod template."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                for container in node.get(key) or []:
                    found.add(container["image"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for doc in rendered.docs:
        walk(doc)
    return found


def built(registry: str = "", tag: str | None = None) -> set[str]:
    return {b.ref for b in images_script().plan(registry, tag) if b.push}


def test_the_tiny_cpu_example_pulls_only_images_make_images_builds() -> None:
    images = pulled(render_example("tiny-cpu"))
    assert images <= built(), images - built()
    version = images_script().app_version()
    assert images == {f"modaverse/{n}:{version}" for n in ("encoder", "llm", "gateway", "web", "generators")}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_every_example_pulls_only_images_make_images_builds(example: str) -> None:
    images = pulled(render_example(example))
    assert images
    assert images <= built(), images - built()


def test_the_full_gpu_example_runs_vllm_from_the_vllm_image() -> None:
    rendered = render_example("full-gpu", "release.prepare.enabled=true")
    version = images_script().app_version()
    llm = rendered.get("Deployment", "mv-modaverse-llm")["spec"]["template"]["spec"]["containers"][0]
    assert llm["image"] == f"modaverse/llm-vllm:{version}"
    assert {"name": "MODAVERSE_LLM_IMPL", "value": "vllm"} in llm["env"]
    assert pulled(rendered) <= built()


def test_the_printed_helm_flags_pull_what_make_images_built_for_a_registry_and_tag() -> None:
    registry, tag = "registry.example.com/team", "2.0.0-rc1"
    hint = shlex.split(images_script().helm_hint(registry, tag))
    sets = tuple(hint[i + 1] for i, word in enumerate(hint) if word == "--set")
    assert sets
    images = pulled(render(EXAMPLES["tiny-cpu"], sets))
    assert images <= built(registry, tag), images - built(registry, tag)
    assert all(i.startswith(f"{registry}/") and i.endswith(f":{tag}") for i in images)


@pytest.mark.parametrize(
    ("example", "only"),
    [("tiny-cpu", "encoder llm generators gateway web"), ("full-gpu", "encoder llm-vllm generators gateway")],
)
def test_the_docs_build_exactly_the_images_each_example_pulls(example: str, only: str) -> None:
    """docs/deploy.md's install steps build and push these with ONLY=…: no image missing, none extra."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    assert f'make images push REGISTRY=$REGISTRY ONLY="{only}"' in doc
    registry = "registry.example.com/team"
    chosen = {b.ref for b in images_script().plan(registry, None, only.split()) if b.push}
    assert pulled(render_example(example, f"global.imageRegistry={registry}/")) == chosen
