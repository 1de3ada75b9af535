"""Builds the release's prompt from a conversation, and fits it into the context window.

Layout (DESIGN §5), per message, oldest first, after one BOS token:

    user:       "### Human: " + segments joined by " " + "\\n### Assistant:"
    assistant:  " " + text + "\\n"

A text segment is written as is; a media segment becomes ``<Media>`` + its projected rows +
``</Media>``. So one image then an instruction gives the release's exact
``### Human: <Media>[row]</Media> {instruction}\\n### Assistant:``.

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

from modaverse_runtime.errors import InvalidArgument

from .template import ASSISTANT, HUMAN, MEDIA_END, MEDIA_START
from .types import MediaRows, Message, Role

Piece = list[int] | torch.Tensor  # token ids, or (rows, hidden) embedding rows


class Tokenizer(Protocol):
    bos_token_id: int | None

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
            mask += [True] * len(piece) if isinstance(piece, list) else [False] * int(piece.shape[0])
        return mask


def _piece_len(piece: Piece) -> int:
    return len(piece) if isinstance(piece, list) else int(piece.shape[0])


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


class PromptBuilder:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.bos = tokenizer.bos_token_id
        self.media_start = int(tokenizer.convert_tokens_to_ids(MEDIA_START))
        self.media_end = int(tokenizer.convert_tokens_to_ids(MEDIA_END))

    def _ids(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)] if text else []

    def message_pieces(self, message: Message) -> list[Piece]:
        """Text is tokenized in runs between media items, as the release splits around them."""
        if message.role is Role.ASSISTANT:
            return [self._ids(" " + "".join(s for s in message.segments if isinstance(s, str)) + "\n")]
        pieces: list[Piece] = []
        text = HUMAN
        for seg in message.segments:
            if isinstance(seg, str):
                text += " " + seg
                continue
            pieces.append([*self._ids(text + " "), self.media_start])
            pieces.append(seg.rows)
            pieces.append([self.media_end])
            text = ""
        pieces.append(self._ids(text + ASSISTANT))
        return [p for p in pieces if _piece_len(p)]

    def build(self, messages: Sequence[Message], context_length: int, max_tokens: int) -> PreparedPrompt:
        validate_messages(messages)
        per_message = [self.message_pieces(m) for m in messages]
        lengths = [sum(_piece_len(p) for p in pieces) for pieces in per_message]
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
        pieces: list[Piece] = [list(head)] if head else []
        for chunk in per_message[first:]:
            pieces += chunk
        text_ids = tuple(i for p in pieces if isinstance(p, list) for i in p)
        return PreparedPrompt(tuple(pieces), total, text_ids, first)
