"""`helm lint --strict` with the real binary, for the chart's defaults and every example values file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helm.chart import CHART, EXAMPLES, KUBE_VERSION, ROOT, helm, kubernetes_validate


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_helm_lint_strict(example: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for name in EXAMPLES[example]:
        args += ["-f", str(CHART / name)]
    proc = helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_every_example_file_is_covered() -> None:
    files = {p.name for p in CHART.glob("values-*.yaml")}
    covered = {name for names in EXAMPLES.values() for name in names}
    assert files == covered


def test_values_schema_is_generated_from_gen_schema() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "helm" / "gen_schema.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_helm_package_builds(tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("pkg")
    proc = helm("package", str(CHART), "--destination", str(out))
    assert (out / "modaverse-0.1.0.tgz").is_file(), proc.stdout


def test_tools_are_the_pinned_versions() -> None:
    assert helm("version", "--short").stdout.startswith("v4.1.4"), "run `make helm-tools`"
    kv = kubernetes_validate()
    assert kv.version.__version__ == "1.37.0", "run `make helm-tools`"
    assert any(v.startswith(KUBE_VERSION.rsplit(".", 1)[0]) for v in kv.utils.all_versions())
