"""The Encoder role: media items in, ImageBind vectors and adaptor rows out."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from modaverse_runtime.media import MediaKind
from modaverse_runtime.models import ModelBase
from modaverse_runtime.registry import Registry

from .settings import EncoderSettings


@dataclass(frozen=True)
class MediaInput:
    kind: MediaKind
    data: bytes
    mime_type: str = ""


@dataclass(frozen=True)
class EncodedItem:
    kind: MediaKind
    imagebind: torch.Tensor  # (embed_dim,) float32, CPU
    projected: torch.Tensor  # (rows, hidden) in the compute dtype, CPU


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


class Encoder(ModelBase):
    """Implementations are constructed from settings alone (cheap); ``load`` does the work."""

    role = "encoder"

    def __init__(self, settings: EncoderSettings) -> None:
        super().__init__()
        self.settings = settings

    @abc.abstractmethod
    async def encode(self, items: Sequence[MediaInput]) -> list[EncodedItem]:
        """Encode items in order. Raises InvalidArgument for bad media."""

    @abc.abstractmethod
    def info(self) -> EncoderInfo: ...


ENCODERS: Registry[Encoder] = Registry("encoder", Encoder)
ENCODERS.register("imagebind", "modaverse_encoder.imagebind_encoder:ImageBindEncoder")
