"""Prompt building: the release's template, media framing, several media per turn, truncation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from modaverse_llm.prompt import MediaPiece, PromptBuilder
from modaverse_llm.types import MediaRows, Message, Role
from modaverse_runtime.errors import InvalidArgument


def user(*segments: str | MediaRows) -> Message:
    return Message(Role.USER, tuple(segments))


def assistant(text: str) -> Message:
    return Message(Role.ASSISTANT, (text,))


def rows(n: int = 1, value: float = 0.5) -> MediaRows:
    return MediaRows("image", torch.full((n, 256), value))


def render(tokenizer: Any, pieces: Any) -> str:
    """The prompt as text, each media block written as [ROWS n]."""
    out = []
    for p in pieces:
        out.append(tokenizer.decode(p) if isinstance(p, list) else f"[ROWS {len(p)}]")
    return "".join(out)


def test_single_image_matches_the_release_construction(tokenizer: Any) -> None:
    """Byte-level tokenizer: stripped runs show as no space around the media frame (the release strips
    each text run; tests/integration/test_release_parity.py checks this against the release's algorithm)."""
    prompt = PromptBuilder(tokenizer).build([user(rows(), "draw a cat")], 1024, 246)
    first = prompt.pieces[0]
    assert isinstance(first, list) and first[0] == tokenizer.bos_token_id
    text = render(tokenizer, [first[1:], *prompt.pieces[1:]])
    assert text == "### Human:<Media>[ROWS 1]</Media>draw a cat\n### Assistant:"
    assert prompt.length == sum(len(p) for p in prompt.pieces)
    assert prompt.truncated_messages == 0
    mask = prompt.is_token_mask()
    assert len(mask) == prompt.length and mask.count(False) == 1


def test_text_only_keeps_the_templates_double_space(tokenizer: Any) -> None:
    prompt = PromptBuilder(tokenizer).build([user("hello")], 1024, 246)
    assert render(tokenizer, prompt.pieces) == "<s>### Human:  hello\n### Assistant:"


def test_media_rows_are_framed_by_the_added_token_ids(tokenizer: Any) -> None:
    prompt = PromptBuilder(tokenizer).build([user(rows(2), rows(1, 1.0), "compare")], 1024, 10)
    start, end = tokenizer.convert_tokens_to_ids(["<Media>", "</Media>"])
    media = [i for i, p in enumerate(prompt.pieces) if isinstance(p, MediaPiece)]
    assert len(media) == 2
    for i in media:
        before, after = prompt.pieces[i - 1], prompt.pieces[i + 1]
        assert isinstance(before, list) and isinstance(after, list)
        assert before[-1] == start and after[0] == end
    first, second = (prompt.pieces[i] for i in media)
    assert isinstance(first, MediaPiece) and isinstance(second, MediaPiece)
    assert len(first) == 2 and float(second.rows[0, 0]) == 1.0 and first.modality == "image"
    # Media items are concatenated with no separator, as the release's format_paths joins its tags.
    assert render(tokenizer, prompt.pieces) == (
        "<s>### Human:<Media>[ROWS 2]</Media><Media>[ROWS 1]</Media>compare\n### Assistant:"
    )


def test_multi_turn_layout(tokenizer: Any) -> None:
    messages = [user(rows(), "what is it?"), assistant(" Modality: [TEXT] Prompt: a cat\n"), user("draw it")]
    prompt = PromptBuilder(tokenizer).build(messages, 1024, 20)
    assert render(tokenizer, prompt.pieces) == (
        "<s>### Human:<Media>[ROWS 1]</Media>what is it?\n### Assistant:Modality: [TEXT] Prompt: a cat ###"
        "### Human:  draw it\n### Assistant:"
    )


def test_a_tokenizer_without_the_media_tokens_is_refused(tokenizer: Any) -> None:
    from modaverse_runtime.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition, match="no <Media> token"):
        PromptBuilder(_Without(tokenizer, "<Media>"))


class _Without:
    """The tiny tokenizer with one added token taken out (it then falls apart into pieces)."""

    def __init__(self, tokenizer: Any, token: str) -> None:
        self.inner, self.token = tokenizer, token
        self.bos_token_id, self.unk_token_id = tokenizer.bos_token_id, tokenizer.unk_token_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if text == self.token:
            return [int(i) for i in self.inner.encode("<Med", add_special_tokens=False)]
        return [int(i) for i in self.inner.encode(text, add_special_tokens=add_special_tokens)]

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self.unk_token_id if token == self.token else int(self.inner.convert_tokens_to_ids(token))


def test_truncation_drops_oldest_whole_turns_first(tokenizer: Any) -> None:
    builder = PromptBuilder(tokenizer)
    history = [user("one " * 20), assistant("two " * 20), user("three " * 20), assistant("four " * 20)]
    messages = [*history, user("last question")]
    full = builder.build(messages, 1024, 10)
    assert full.truncated_messages == 0
    last_only = builder.build(messages[-1:], 1024, 10)
    # Room for the last two exchanges minus a bit: the oldest user+assistant pair goes (2 messages).
    ctx = full.length + 10 - 5
    cut = builder.build(messages, ctx, 10)
    assert cut.truncated_messages == 2
    assert render(tokenizer, cut.pieces).startswith("<s>### Human:  three")
    # Tiny context: everything but the last user message goes.
    tiny = builder.build(messages, last_only.length + 10, 10)
    assert tiny.truncated_messages == 4 and tiny.length == last_only.length


def test_last_turn_kept_even_when_max_tokens_does_not_fit(tokenizer: Any) -> None:
    builder = PromptBuilder(tokenizer)
    prompt = builder.build([user("hello there")], 1024, 10)
    fitted = builder.build([user("hello there")], prompt.length + 1, 246)
    assert fitted.length == prompt.length  # generation is cut at the context length instead


def test_prompt_over_context_is_invalid(tokenizer: Any) -> None:
    with pytest.raises(InvalidArgument, match="context length is 16"):
        PromptBuilder(tokenizer).build([user("word " * 40)], 16, 1)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "messages is empty"),
        ([user("hi"), assistant("yo")], "last message must be the user"),
        ([user("  ")], "last user message is empty"),
        ([user()], "last user message is empty"),
        ([Message(Role.ASSISTANT, (rows(),)), user("hi")], "assistant messages hold text only"),
    ],
)
def test_bad_conversations(tokenizer: Any, messages: list[Message], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        PromptBuilder(tokenizer).build(messages, 1024, 10)
