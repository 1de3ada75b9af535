"""The ``modaverse`` command's parts that need no server: ``--version`` and ``up`` without the services."""

from __future__ import annotations

from pathlib import Path

import pytest

import modaverse
from modaverse import local
from modaverse.cli import main


def test_version_prints_the_sdk_and_the_api_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"modaverse {modaverse.__version__}",
        f"modaverse-protos {modaverse.API_VERSION} (API version)",
    ]


def test_up_without_the_services_says_what_to_install_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real = local.find_service_executable
    monkeypatch.setattr(
        local,
        "find_service_executable",
        lambda name: None if name in ("modaverse-llm", "modaverse-gateway") else real(name),
    )
    with pytest.raises(SystemExit) as exit_:
        main(["up", "--log-dir", str(tmp_path / "logs")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "modaverse-llm, modaverse-gateway are not installed" in err
    assert "modaverse-encoder" not in err  # installed in the development virtualenv
    assert "make install" in err and "pip install ./protos ./sdk" in err
    assert not (tmp_path / "logs").exists()


def test_services_not_installed_names_one_missing_service_in_the_singular() -> None:
    assert "modaverse-llm is not installed" in str(local.ServicesNotInstalled(["modaverse-llm"]))
