"""values.schema.json refuses bad values (helm applies it on lint, template, install and upgrade)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helm.chart import CHART, helm, render_error

BAD_VALUES: dict[str, tuple[tuple[str, ...], str]] = {
    # wrong types
    "replicas-string": (("encoder.replicas=two",), "/encoder/replicas"),
    "port-out-of-range": (("llm.port=70000",), "/llm/port"),
    "gpu-count-string": (("encoder.gpu.count=one",), "/encoder/gpu/count"),
    "gpu-enabled-string": (("llm.gpu.enabled=yes",), "/llm/gpu/enabled"),
    "profile-enum": (("global.profile=huge",), "/global/profile"),
    "modality-enum": (("generators.sd15.modality=text",), "/generators/sd15/modality"),
    "env-object": (("encoder.env.MODAVERSE_X.y=1",), "/encoder/env/MODAVERSE_X"),
    "env-bad-name": (("encoder.env.bad-name=1",), "bad-name"),
    "resources-bad-quantity": (("llm.resources.requests.memory=lots",), "/llm/resources/requests/memory"),
    "autoscaling-kind": (("encoder.autoscaling.kind=vpa",), "/encoder/autoscaling/kind"),
    "service-type": (("gateway.service.type=ExternalName",), "/gateway/service/type"),
    # unknown keys
    "unknown-top-level": (("encodr.replicas=1",), "encodr"),
    "unknown-block-key": (("encoder.replica=1",), "replica"),
    "unknown-global-gpu-key": (("global.gpu.count=1",), "count"),
    "unknown-generator-key": (("generators.sd15.modell=x",), "modell"),
    "unknown-storage-key": (("llm.storage.claim=x",), "claim"),
    # missing / required
    "missing-gpu-count": (("encoder.gpu.count=null",), "count"),
    "missing-gpu-count-new-generator": (
        (
            "generators.kandinsky.modality=image",
            "generators.kandinsky.model=k/k",
            "generators.kandinsky.gpu.enabled=true",
        ),
        "count",
    ),
    "generator-without-model": (("generators.x.modality=image",), "model"),
    "generator-without-modality": (("generators.x.model=a/b",), "modality"),
    "generator-bad-name": (("generators.SDXL.modality=image", "generators.SDXL.model=a/b"), "SDXL"),
    "existing-claim-without-name": (("encoder.storage.source=existingClaim",), "existingClaim"),
    "gpu-count-zero": (("encoder.gpu.count=0",), "/encoder/gpu/count"),
    "encoder-scale-to-zero": (("encoder.autoscaling.minReplicas=0",), "/encoder/autoscaling/minReplicas"),
    # release: paths inside the pods are absolute, without a trailing slash; prepare needs a root
    "release-root-relative": (("release.root=models/mv",), "/release/root"),
    "release-root-trailing-slash": (("release.root=/models/mv/",), "/release/root"),
    "release-root-with-space": (("release.root=/models/my release",), "/release/root"),
    "release-unknown-key": (("release.prepare.claim=x",), "claim"),
    "release-unknown-source": (("release.prepare.sources.vicuna.repo=a/b",), "vicuna"),
    "release-bad-repo": (("release.prepare.sources.llama.repo=not a repo",), "/release/prepare/sources/llama/repo"),
    "release-bad-url": (("release.prepare.imagebindUrl=ftp://x/y.pth",), "/release/prepare/imagebindUrl"),
    # the web front door
    "web-unknown-key": (("web.gpu.enabled=true",), "gpu"),
    "web-port-out-of-range": (("web.port=0",), "/web/port"),
    "web-enabled-string": (("web.enabled=yes",), "/web/enabled"),
    "web-media-host-with-scheme": (("web.allowedMediaHosts={https://example.com}",), "/web/allowedMediaHosts/0"),
    "web-public-url-not-http": (("web.publicUrl=chat.example.org",), "/web/publicUrl"),
    "web-tls-mtls-not-offered": (("web.tls.mtls=true",), "mtls"),
    "web-empty-token-key": (("web.auth.key=",), "/web/auth/key"),
    "web-unknown-network-policy-key": (("networkPolicy.webTo[0].podSelector.x=y",), "webTo"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects(case: str) -> None:
    sets, needle = BAD_VALUES[case]
    err = render_error(*sets)
    assert "values don't meet the specifications of the schema" in err, err
    assert needle in err, err


def test_schema_accepts_gpu_disabled_without_count() -> None:
    proc = helm("template", "r", str(CHART), "--set", "encoder.gpu.count=null", "--set", "encoder.gpu.enabled=false")
    assert "kind: Deployment" in proc.stdout


def test_schema_is_strict_where_the_chart_owns_the_shape() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def closed(node: object, path: str) -> list[str]:
        """Paths of objects with declared properties that still allow unknown keys."""
        if not isinstance(node, dict):
            return []
        found = []
        if "properties" in node and node.get("additionalProperties") is not False:
            found.append(path)
        for key, child in node.items():
            if isinstance(child, dict):
                found += closed(child, f"{path}/{key}")
        return found

    # Conditionals (if/then) and extraEnv items (Kubernetes EnvVar objects, checked on the manifests) stay open.
    open_paths = [p for p in closed(schema, "") if not p.endswith(("/if", "/then", "/extraEnv/items"))]
    assert open_paths == []


def test_lint_reports_schema_errors_for_a_values_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("generators:\n  sd15:\n    modality: image\n    model: 15\n")
    proc = helm("lint", "--strict", str(CHART), "-f", str(bad), check=False)
    assert proc.returncode != 0
    assert "/generators/sd15/model" in proc.stdout + proc.stderr
