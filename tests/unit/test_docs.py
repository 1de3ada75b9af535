from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_is_current() -> None:
    spec = importlib.util.spec_from_file_location("config_docs", ROOT / "scripts" / "config_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert current == module.render(), "docs/configuration.md is stale: run `python scripts/config_docs.py`"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test   #" in readme
    assert ci.strip().splitlines()[-1] == "make test"


def test_readme_application_example_is_the_type_checked_one() -> None:
    """The README's example is examples/quickstart.py verbatim (which `make lint` and the SDK's
    standalone test type-check against the SDK)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use from your application", 1)[1].split("\n## ", 1)[0]
    assert "pip install ./sdk" in section
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert code == (ROOT / "examples" / "quickstart.py").read_text()
    assert len(code.splitlines()) <= 10


def test_sdk_doc_covers_the_public_api() -> None:
    import inspect
    import re

    import modaverse

    doc = (ROOT / "docs" / "sdk.md").read_text()
    missing = [
        name
        for name in modaverse.__all__
        if not re.search(rf"(?<![\w.]){re.escape(name)}\b", doc.replace("modaverse.", ""))
    ]
    assert missing == [], f"docs/sdk.md does not mention {missing}"
    for function in (modaverse.Client.chat, modaverse.AsyncClient.stream, modaverse.Client.__init__):
        params = [p for p in inspect.signature(function).parameters if p != "self"]
        undocumented = [p for p in params if f"`{p}" not in doc and f"{p}=" not in doc]
        assert undocumented == [], f"{function.__qualname__}: {undocumented} not in docs/sdk.md"
    for event in ("TextDelta", "MetaResponse", "InvocationStarted", "Progress", "MediaChunk", "Done"):
        fields = getattr(modaverse, event).__dataclass_fields__
        assert all(f"`{f}`" in doc for f in fields), event


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (hyphens, underscores kept), spaces → "-"."""
    anchors = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        anchors.add("".join(c for c in title if c.isalnum() or c in " -_").replace(" ", "-"))
    return anchors


def _doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_links_between_the_docs_resolve() -> None:
    import re

    broken = []
    for page in _doc_pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_code_cites_the_architecture_doc_by_existing_anchors() -> None:
    """The design reference is docs/architecture.md: no citation of a document outside the repository,
    and every `architecture.md#anchor` in code or docs names a heading that exists."""
    import re
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    anchors = _anchors((ROOT / "docs" / "architecture.md").read_text())
    outside, unknown, cited = [], [], 0
    for name in files:
        if not name.endswith((".py", ".md", ".yaml", ".tpl", ".sh", "Makefile", "Dockerfile")) or name.endswith(
            "test_docs.py"
        ):
            continue
        if not (ROOT / name).is_file():  # deleted in the working tree, not yet in git
            continue
        text = (ROOT / name).read_text(errors="replace")
        if re.search(r"DESIGN(\.md| §)", text):
            outside.append(name)
        for anchor in re.findall(r"architecture\.md#([\w-]+)", text):
            cited += 1
            if anchor not in anchors:
                unknown.append(f"{name}: #{anchor}")
    assert outside == [], "cite docs/architecture.md, not a document outside the repository"
    assert unknown == []
    assert cited >= 5  # the code does cite it (the check above is not vacuous)
