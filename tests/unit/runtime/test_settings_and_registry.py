from __future__ import annotations

import pytest
from pydantic import ValidationError

from modaverse_encoder.base import ENCODERS, Encoder
from modaverse_encoder.imagebind_encoder import ImageBindEncoder
from modaverse_encoder.settings import EncoderSettings
from modaverse_runtime.errors import FailedPrecondition
from modaverse_runtime.registry import Registry


def test_settings_come_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAVERSE_PORT", "6000")
    monkeypatch.setenv("MODAVERSE_BATCHING", "false")
    monkeypatch.setenv("MODAVERSE_MAX_MEDIA_MB", "2")
    settings = EncoderSettings()
    assert settings.port == 6000
    assert settings.batching is False
    assert settings.media_limits.max_bytes == 2 * 2**20
    assert EncoderSettings(port=7000).port == 7000  # explicit values (CLI flags) win


def test_bad_settings_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAVERSE_PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        EncoderSettings()


def test_registry_resolves_names_and_rejects_unknown() -> None:
    assert ENCODERS.resolve("imagebind") is ImageBindEncoder
    with pytest.raises(FailedPrecondition, match="known: imagebind"):
        ENCODERS.resolve("clip")
    # a full import path works for out-of-tree implementations, but must be the right role
    assert ENCODERS.resolve("modaverse_encoder.imagebind_encoder:ImageBindEncoder") is ImageBindEncoder
    with pytest.raises(FailedPrecondition, match="not a Encoder"):
        ENCODERS.resolve("modaverse_encoder.settings:EncoderSettings")


def test_registry_refuses_conflicting_registration() -> None:
    registry: Registry[Encoder] = Registry("encoder", Encoder)
    registry.register("x", "a:B")
    registry.register("x", "a:B")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("x", "c:D")
