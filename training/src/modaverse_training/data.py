"""Examples → token sequences, built by the LLM service's own PromptBuilder.

Serving builds the release's ``BOS ### Human: <Media>[row]</Media> {instruction}\\n### Assistant:``
with ``modaverse_llm.prompt.PromptBuilder``; training builds the very same pieces through it (a media
row is a placeholder position here, filled with the adaptor's output at each step) and appends the
target as the release does and as serving renders an earlier assistant turn
(``PromptBuilder.assistant_ids``): the meta-response, then `` ###``. Loss falls only on the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modaverse_llm.prompt import PromptBuilder
from modaverse_llm.types import MediaRows, Message, Role

from .schema import Example

IGNORE = -100  # label of positions that carry no loss (prompt, padding)


@dataclass(frozen=True)
class Encoded:
    ids: tuple[int, ...]  # prompt + target; media positions hold a placeholder id
    prompt_len: int
    media_pos: tuple[int, ...]  # positions filled with adaptor rows
    media: tuple[tuple[str, Path], ...]  # (kind, file) per media position, in order


def resolve_media(example: Example, root: Path) -> tuple[tuple[str, Path], ...]:
    return tuple((m.kind, Path(m.path) if Path(m.path).is_absolute() else root / m.path) for m in example.media)


def user_message(example: Example, rows: Sequence[torch.Tensor]) -> Message:
    """The release's order: every media item first, then the instruction."""
    media = [MediaRows(m.kind, r) for m, r in zip(example.media, rows, strict=True)]
    return Message(Role.USER, (*media, example.instruction))


def encode_example(builder: PromptBuilder, example: Example, root: Path, context_length: int) -> Encoded:
    placeholder = torch.zeros(1, 1)  # one row per item (the release's adaptor); width irrelevant here
    target = builder.assistant_ids(example.meta_text())
    prompt = builder.build([user_message(example, [placeholder] * len(example.media))], context_length, len(target))
    ids: list[int] = []
    media_pos: list[int] = []
    for piece in prompt.pieces:
        if isinstance(piece, list):
            ids += piece
        else:
            media_pos += range(len(ids), len(ids) + len(piece))
            ids += [builder.media_end] * len(piece)  # any id: the embedding is replaced
    return Encoded(tuple(ids + target), len(ids), tuple(media_pos), resolve_media(example, root))


@dataclass
class Batch:
    ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L), IGNORE outside the targets
    media_b: torch.Tensor  # (M,) row of each media position
    media_p: torch.Tensor  # (M,) column of each media position
    media_index: torch.Tensor  # (M,) index into the feature table
    media_kinds: list[str]  # (M,)

    def to(self, device: torch.device) -> Batch:
        moved: dict[str, Any] = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()
        }
        return Batch(**moved)


def collate(items: Sequence[Encoded], media_index: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Right-padded batch; ``media_index[i]`` maps example i's media to rows of the feature table."""
    width = max(len(e.ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(items), width, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mb: list[int] = []
    mp: list[int] = []
    mi: list[int] = []
    kinds: list[str] = []
    for b, (enc, index) in enumerate(zip(items, media_index, strict=True)):
        n = len(enc.ids)
        ids[b, :n] = torch.tensor(enc.ids)
        mask[b, :n] = 1
        labels[b, enc.prompt_len : n] = torch.tensor(enc.ids[enc.prompt_len :])
        mb += [b] * len(enc.media_pos)
        mp += enc.media_pos
        mi += index
        kinds += [kind for kind, _ in enc.media]
    return Batch(
        ids,
        mask,
        labels,
        torch.tensor(mb, dtype=torch.long),
        torch.tensor(mp, dtype=torch.long),
        torch.tensor(mi, dtype=torch.long),
        kinds,
    )
