"""Sampling validation, the token choice, and stop-string streaming."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from modaverse_llm.sampling import choose_token, validate_sampling
from modaverse_llm.stops import StopScanner
from modaverse_llm.types import SamplingParams
from modaverse_runtime.errors import InvalidArgument

OK = SamplingParams()


def test_release_defaults() -> None:
    assert (OK.max_tokens, OK.temperature, OK.top_p, OK.top_k, OK.stop) == (246, 1.0, 0.01, 0, ("###",))
    validate_sampling(OK, 2048, 8, 64)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": math.inf}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": 50.0}, "repetition_penalty"),
        ({"stop": tuple("abcdefghi")}, "at most 8"),
        ({"stop": ("",)}, r"stop\[0\]"),
        ({"stop": ("x" * 65,)}, r"stop\[0\]"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_absurd_values_are_rejected(change: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validate_sampling(replace(OK, **change), 2048, 8, 64)  # type: ignore[arg-type]


def test_greedy_and_nucleus() -> None:
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    assert choose_token(logits, replace(OK, temperature=0.0), [], None) == 1
    # top_p 0.01 at temperature 1 keeps only the most likely token: the release's "greedy".
    gen = torch.Generator().manual_seed(0)
    assert {choose_token(logits, OK, [], gen) for _ in range(50)} == {1}
    # Full nucleus samples both close tokens.
    wide = replace(OK, top_p=1.0, temperature=1.0)
    assert {choose_token(logits, wide, [], gen) for _ in range(200)} >= {1, 2}
    # top_k 2 never picks tokens 0 or 3.
    assert {choose_token(logits, replace(wide, top_k=2), [], gen) for _ in range(200)} == {1, 2}


def test_seeded_sampling_is_reproducible() -> None:
    logits = torch.randn(100)
    p = replace(OK, top_p=1.0, temperature=1.5)

    def draw() -> list[int]:
        gen = torch.Generator().manual_seed(7)
        return [choose_token(logits, p, [], gen) for _ in range(20)]

    assert draw() == draw()


def test_repetition_penalty_moves_away_from_seen_tokens() -> None:
    logits = torch.tensor([1.0, 1.2, 0.5])
    greedy = replace(OK, temperature=0.0)
    assert choose_token(logits, greedy, [1], None) == 1
    assert choose_token(logits, replace(greedy, repetition_penalty=1.5), [1], None) == 0


def feed(scanner: StopScanner, pieces: list[str]) -> str:
    text, out = "", []
    for p in pieces:
        text += p
        out.append(scanner.update(text))
        if scanner.stopped:
            break
    out.append(scanner.flush())
    return "".join(out)


def test_stop_string_is_cut_and_never_streamed() -> None:
    scanner = StopScanner(["###"])
    streamed = feed(scanner, ["Modality:", " [IMAGE]", " a cat #", "#", "# more"])
    assert scanner.stopped and streamed == scanner.text == "Modality: [IMAGE] a cat "


def test_partial_stop_is_released_when_it_does_not_complete() -> None:
    scanner = StopScanner(["###"])
    assert scanner.update("a #") == "a "
    assert scanner.update("a #b") == "#b"
    assert not scanner.stopped


def test_incomplete_utf8_is_held_back() -> None:
    scanner = StopScanner(["###"])
    assert scanner.update("caf\ufffd") == "caf"
    assert scanner.update("café") == "é"


def test_a_character_cut_after_two_of_its_bytes_is_held_back_whole() -> None:
    """Two bytes of a 3-byte character decode as two replacement chars: neither may be streamed,
    or the deltas would not add up to the final text once the character completes or is dropped."""
    scanner = StopScanner(["###"])
    assert scanner.update("ok \ufffd") == "ok "
    assert scanner.update("ok \ufffd\ufffd") == ""
    assert scanner.update("ok ✓") == "✓"
    cut = StopScanner(["###"])
    streamed = cut.update("end \ufffd\ufffd")
    streamed += cut.flush()  # max_tokens reached mid-character: the fragment is dropped
    assert streamed == cut.text == "end "


def test_several_stop_strings_earliest_wins() -> None:
    scanner = StopScanner(["END", "\n\n"])
    assert feed(scanner, ["one\n\ntwo END"]) == "one"
