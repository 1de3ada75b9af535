"""The streamed answer adds up to the gateway's parsed answer, however the LLM's text is cut into deltas.

The oracle is the gateway's own parser (the web package never imports it; the test may)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modaverse_gateway.metaresponse import parse_meta_response
from modaverse_web.answer_stream import AnswerStream

RAWS = [
    "Modality: [TEXT] Prompt: It is a cat. ###",
    "Modality: [TEXT] Prompt: It is a cat, my modality friend. ###",
    "modality : [text]   prompt:   spaced out   ###",
    "Modality: [TEXT] Model: llm-2 Prompt: with a model name ###",
    "Modality: [TEXT] Prompt: line one\nline two\n  indented ### Human: ignored",
    "Modality: [TEXT] Prompt: the tag [IMAGE] marks a picture ###",
    "Modality: [TEXT] Prompt: two blocks\nModality: [IMAGE] Prompt: a fox",
    "Modality: [TEXT] Prompt: then a flag line\n[IMAGE] a fox",
    "Modality: [TEXT] Prompt: hashes # and ## inside ###",
    "Modality: [TEXT] Prompt: ends without a stop",
    "Modality: [TEXT] Prompt: - : leading marks",
    "Modality: [IMAGE] Prompt: a red circle ###",
    "Sure.\nModality: [IMAGE] Prompt: a fox\nModality: [AUDIO] Prompt: barking",
    "no format at all, just prose",
    "[TEXT] Prompt: bare flag at the start ###",
    "Modality: [TEXT] [IMAGE] Prompt: thunder ###",
    "Modality: [TEXT] Prompt: ###",
    "",
]


def stream(raw: str, cuts: list[int]) -> tuple[list[str], str, AnswerStream]:
    answer = AnswerStream()
    pieces, start = [], 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        if cut > start:
            pieces.append(answer.feed(raw[start:cut]))
            start = cut
    rest = answer.finish(parse_meta_response(raw).answer)
    return pieces, rest, answer


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(RAWS), st.lists(st.integers(min_value=1, max_value=80), max_size=20))
def test_streamed_text_plus_the_rest_is_the_parsed_answer(raw: str, cuts: list[int]) -> None:
    pieces, rest, answer = stream(raw, [c for c in cuts if c < len(raw)])
    assert "".join(pieces) + rest == parse_meta_response(raw).answer
    assert not answer.diverged


@pytest.mark.parametrize(
    ("raw", "streamed"),
    [
        ("Modality: [TEXT] Prompt: It is a cat. ###", True),
        ("Modality: [IMAGE] Prompt: a red circle ###", False),  # a generator's prompt is not the answer
        ("Sure.\nModality: [IMAGE] Prompt: a fox", False),  # prose first: held to the end
        ("no format at all, just prose", False),
    ],
)
def test_only_the_plain_text_case_streams_before_the_end(raw: str, streamed: bool) -> None:
    pieces, _rest, _ = stream(raw, list(range(1, len(raw))))  # one character at a time
    assert any(pieces) is streamed


def test_a_marker_is_never_shown_before_it_is_known_to_be_text() -> None:
    answer = AnswerStream()
    answer.feed("Modality: [TEXT] Prompt: see the mod")
    assert answer.sent == "see the"  # "mod" may become "Modality:"
    answer.feed("el ##")
    assert answer.sent == "see the model"  # "##" may become "###"
    answer.feed("# Human: more")
    assert answer.finish("see the model") == ""


def test_an_answer_that_does_not_extend_the_streamed_text_is_reported() -> None:
    answer = AnswerStream()
    answer.feed("Modality: [TEXT] Prompt: hello there")
    assert answer.finish("something else") == ""
    assert answer.diverged


FRAGMENTS = [
    "Modality:",
    " [TEXT]",
    " [IMAGE]",
    "[AUDIO]",
    " Prompt:",
    " Model: m1",
    "###",
    "#",
    "\n",
    "  ",
    " mod",
    "a",
]
FRAGMENTS += ["ality", " word", ",", "-", ":", " modality", "Human:", "[", "]", "text"]


PREFIXES = ["Modality: [TEXT] Prompt:", "[TEXT] Prompt:", " modality: [text] prompt :", "[text] Model: m1", ""]


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(PREFIXES),
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join),
    st.lists(st.integers(min_value=1, max_value=60), max_size=12),
)
def test_random_meta_responses_never_show_text_the_answer_lacks(prefix: str, rest: str, cuts: list[int]) -> None:
    raw = prefix + rest
    pieces, rest, answer = stream(raw, [c for c in cuts if c < len(raw)])
    assert not answer.diverged, raw
    assert "".join(pieces) + rest == parse_meta_response(raw).answer
