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
