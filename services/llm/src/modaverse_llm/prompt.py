"""Builds the release's prompt from a conversation, and fits it into the context window.

The release (``ModaVerse.embed_prompt_template`` + ``tokenize``) fills ``### Human: {media}
{instruction}\\n### Assistant:`` by string replacement, ``{media}`` being one ``<image>…</image>``
tag per item with no separator; splits the text around the media tags; **strips each text run** and
tokenizes it with ``add_special_tokens=False``; puts BOS first; and turns each media item into the
embedding of ``<Media>``, its projected row(s), the embedding of ``</Media>``. So a text-only prompt
keeps the template's double space (``### Human:  hello``) and no whitespace token touches a media block.

We build the same sequence from a message's segments without the tags: a text segment is written
after one space, a media item with none, between ``### Human: `` and ``\\n### Assistant:``. For a
message in the release's order (media first, then text) that is exactly the filled template, with
several text segments joined by a space as one instruction. Other orders are our extension and keep
the order sent.

Multi-turn is our extension too: an earlier assistant turn is rendered as the release's training
target was, its text then ``" ###"`` tokenized as one run, and the next user turn follows directly.

Truncation rule: when the prompt plus ``max_tokens`` does not fit ``context_length``, whole messages
are dropped from the front (oldest first; an assistant reply left at the front goes too, so the
conversation still starts with a user turn). The last user message is never dropped. If it alone
leaves no room for even one new token, the request is INVALID_ARGUMENT; if it fits but not with all
of ``max_tokens``, generation is cut at the context length (finish reason LENGTH).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from modaverse_runtime.errors import FailedPrecondition, InvalidArgument

from .template import ASSISTANT, DEFAULT_STOP, HUMAN, MEDIA_END, MEDIA_START
from .types import MediaRows, Message, Role


@dataclass(frozen=True)
class MediaPiece:
    """Where one media item's projected rows go (between the <Media> and </Media> ids)."""

    modality: str
    rows: torch.Tensor  # (rows, hidden)

    def __len__(self) -> int:
        return int(self.rows.shape[0])


Piece = list[int] | MediaPiece  # token ids, or a media item's embedding rows


class Tokenizer(Protocol):
    bos_token_id: int | None
    unk_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> Any: ...

    def convert_tokens_to_ids(self, tokens: str) -> Any: ...


@dataclass(frozen=True)
class PreparedPrompt:
    pieces: tuple[Piece, ...]
    length: int  # positions the prompt takes (token ids + embedding rows)
    text_ids: tuple[int, ...]  # the prompt's token ids (for the repetition penalty)
    truncated_messages: int

    def is_token_mask(self) -> list[bool]:
        """Per position: True for a token id, False for an embedding row."""
        mask: list[bool] = []
        for piece in self.pieces:
            mask += [isinstance(piece, list)] * len(piece)
        return mask


def validate_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise InvalidArgument("messages is empty: send at least one user message")
    if messages[-1].role is not Role.USER:
        raise InvalidArgument("the last message must be the user's (ROLE_USER): it is the turn to answer")
    for i, message in enumerate(messages):
        if message.role is Role.ASSISTANT and any(isinstance(s, MediaRows) for s in message.segments):
            raise InvalidArgument(f"messages[{i}]: assistant messages hold text only")
    last = messages[-1].segments
    if not any(isinstance(s, MediaRows) or s.strip() for s in last):
        raise InvalidArgument("the last user message is empty: send text or media")


def added_token_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of one of the release's added tokens; refuses a tokenizer that lacks it (it would
    otherwise become ``<unk>`` and the model would see no media frame at all)."""
    found = tokenizer.convert_tokens_to_ids(token)
    ids = [int(i) for i in tokenizer.encode(token, add_special_tokens=False)]
    if found is None or found == tokenizer.unk_token_id or ids != [int(found)]:
        raise FailedPrecondition(
            f"the tokenizer has no {token} token (it encodes as {ids}): it is not a ModaVerse tokenizer; "
            "use the release's tokenizer files or the folder convert-release wrote"
        )
    return int(found)


class PromptBuilder:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.bos = tokenizer.bos_token_id
        self.media_start = added_token_id(tokenizer, MEDIA_START)
        self.media_end = added_token_id(tokenizer, MEDIA_END)

    def text_ids(self, run: str) -> list[int]:
        """One text run as the release tokenizes it: stripped, no special tokens added."""
        run = run.strip()
        return [int(i) for i in self.tokenizer.encode(run, add_special_tokens=False)] if run else []

    def assistant_ids(self, text: str) -> list[int]:
        """An assistant turn as the release's training target: the meta-response, then `` ###``."""
        return self.text_ids(f"{text.strip()} {DEFAULT_STOP}")

    def user_pieces(self, message: Message) -> list[Piece]:
        pieces: list[Piece] = []
        text = HUMAN
        for seg in message.segments:
            if isinstance(seg, str):
                text += " " + seg
                continue
            pieces += [self.text_ids(text), [self.media_start], MediaPiece(seg.modality, seg.rows), [self.media_end]]
            text = ""
        pieces.append(self.text_ids(text + ASSISTANT))
        return _merge_ids(pieces)

    def message_pieces(self, message: Message) -> list[Piece]:
        if message.role is Role.ASSISTANT:
            return _merge_ids([self.assistant_ids("".join(s for s in message.segments if isinstance(s, str)))])
        return self.user_pieces(message)

    def build(self, messages: Sequence[Message], context_length: int, max_tokens: int) -> PreparedPrompt:
        validate_messages(messages)
        per_message = [self.message_pieces(m) for m in messages]
        lengths = [sum(len(p) for p in pieces) for pieces in per_message]
        head = [self.bos] if self.bos is not None else []
        budget = context_length - len(head)
        first = 0
        while first < len(messages) - 1 and sum(lengths[first:]) + max_tokens > budget:
            first += 1
            while first < len(messages) - 1 and messages[first].role is Role.ASSISTANT:
                first += 1
        total = len(head) + sum(lengths[first:])
        if total >= context_length:
            raise InvalidArgument(
                f"the prompt takes {total} positions (text tokens + media rows); the context length is "
                f"{context_length} and at least one position must remain for the answer"
            )
        pieces: list[Piece] = [list(head)]
        for chunk in per_message[first:]:
            pieces += chunk
        pieces = _merge_ids(pieces)
        text_ids = tuple(i for p in pieces if isinstance(p, list) for i in p)
        return PreparedPrompt(tuple(pieces), total, text_ids, first)


def _merge_ids(pieces: Sequence[Piece]) -> list[Piece]:
    """Adjacent token-id pieces joined into one, empty ones dropped (fewer embedding lookups)."""
    out: list[Piece] = []
    for piece in pieces:
        if not len(piece):
            continue
        if isinstance(piece, list) and out and isinstance(out[-1], list):
            out[-1] = out[-1] + piece
        else:
            out.append(list(piece) if isinstance(piece, list) else piece)
    return out
