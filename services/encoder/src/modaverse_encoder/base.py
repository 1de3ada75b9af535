"""The Encoder role: media items and texts in, ImageBind vectors (and for media, adaptor rows) out."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import torch

from modaverse_runtime.media import MediaKind
from modaverse_runtime.models import ModelBase
from modaverse_runtime.registry import Registry

from .settings import EncoderSettings

# The kind of a text item. MediaKind names media only (decoders, MIME tables, the web front door's checks);
# the encoder also takes texts, which are never decoded as media.
TEXT: Final = "text"
ItemKind = MediaKind | Literal["text"]


@dataclass(frozen=True)
class MediaInput:
    kind: MediaKind
    data: bytes
    mime_type: str = ""


@dataclass(frozen=True)
class TextInput:
    """A text for ImageBind's text branch (decoded from UTF-8; limits are the encoder's to check)."""

    text: str
    kind: Literal["text"] = TEXT


EncoderInput = MediaInput | TextInput


@dataclass(frozen=True)
class EncodedItem:
    kind: ItemKind
    imagebind: torch.Tensor  # (embed_dim,) float32, CPU
    # (rows, hidden) in the compute dtype, CPU; None for texts and when projection was not asked for
    projected: torch.Tensor | None


@dataclass(frozen=True)
class EncoderInfo:
    encoder_model: str
    adaptor: str
    adaptor_mode: str
    embed_dim: int
    hidden_size: int
    rows_per_item: int
    dtype: torch.dtype
    device: str
    encoder_id: str = ""  # names what decides the rows (identity.py); "" when the encoder cannot tell
    accepts_text: bool = False  # TextInput items are encoded (ImageBind's text branch is loaded)


class Encoder(ModelBase):
    """Implementations are constructed from settings alone (cheap); ``load`` does the work."""

    role = "encoder"

    def __init__(self, settings: EncoderSettings) -> None:
        super().__init__()
        self.settings = settings

    @abc.abstractmethod
    async def encode(self, items: Sequence[EncoderInput], *, project: bool = True) -> list[EncodedItem]:
        """Encode items in order; ``project=False`` skips the adaptor (``projected`` is None for every item).
        Raises InvalidArgument for bad media or text, or for text when the encoder takes none."""

    @abc.abstractmethod
    def info(self) -> EncoderInfo: ...


ENCODERS: Registry[Encoder] = Registry("encoder", Encoder)
ENCODERS.register("imagebind", "modaverse_encoder.imagebind_encoder:ImageBindEncoder")
