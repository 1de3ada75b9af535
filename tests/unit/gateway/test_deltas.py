from __future__ import annotations

import pytest

from modaverse_gateway.deltas import DeltaBuffer


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr("modaverse_gateway.deltas.time.monotonic", lambda: now[0])
    return now


def test_first_token_goes_out_at_once_and_later_ones_within_the_interval_are_held(clock: list[float]) -> None:
    buffer = DeltaBuffer(0.02)
    assert buffer.add("Mod") == "Mod"
    clock[0] += 0.005
    assert buffer.add("ality") == ""
    clock[0] += 0.005
    assert buffer.add(":") == ""
    clock[0] += 0.011  # 21 ms since the last send
    assert buffer.add(" [") == "ality: ["
    clock[0] += 0.001
    assert buffer.add("TEXT]") == ""
    assert buffer.flush() == "TEXT]"
    assert buffer.flush() == ""


def test_zero_interval_sends_every_token(clock: list[float]) -> None:
    buffer = DeltaBuffer(0.0)
    assert [buffer.add(t) for t in ("a", "b", "c")] == ["a", "b", "c"]
    assert buffer.flush() == ""
