"""Domain types of the LLM service (no protobuf here: convert.py maps them)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from .template import DEFAULT_STOP


class Role(enum.Enum):
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class MediaRows:
    """One media item's projected rows, (rows, hidden), already cast to the model's dtype."""

    modality: str  # "image" | "video" | "audio"
    rows: torch.Tensor


Segment = str | MediaRows


@dataclass(frozen=True)
class Message:
    role: Role
    segments: tuple[Segment, ...]


# The release's decoding (docs/architecture.md#release-facts): top_p 0.01 at temperature 1 is greedy
# for a trained model.
DEFAULT_MAX_TOKENS = 246
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 0.01


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = DEFAULT_TEMPERATURE  # 0 = greedy
    top_p: float = DEFAULT_TOP_P
    top_k: int = 0  # 0 = off
    seed: int | None = None  # None = a fresh random seed per request
    stop: tuple[str, ...] = (DEFAULT_STOP,)
    repetition_penalty: float = 1.0
    logprobs: bool = False  # report each generated token's log-probability (raw distribution)
    top_logprobs: int = 0  # with logprobs: also this many most likely alternatives per position

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    adapter: str = ""  # "" = the default adapter, "base" = none


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str  # the tokenizer's own token string (e.g. "▁cat")
    logprob: float


@dataclass(frozen=True)
class PositionLogprobs:
    """One generated position: log_softmax of the model's raw next-token logits (before penalties,
    temperature, top-k/top-p) at the chosen token, and the ``top_logprobs`` most likely tokens."""

    chosen: TokenLogprob
    top: tuple[TokenLogprob, ...] = ()  # most likely first


@dataclass(frozen=True)
class Delta:
    text: str
    logprobs: tuple[PositionLogprobs, ...] = ()  # tokens generated since the previous event, in order


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    truncated_messages: int
    logprobs: tuple[PositionLogprobs, ...] = ()  # tokens not yet sent with a Delta


Event = Delta | Completion


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: str
    rank: int
    is_default: bool


@dataclass(frozen=True)
class BackendInfo:
    model: str
    backend: str
    hidden_size: int
    dtype: torch.dtype
    context_length: int
    adapters: tuple[AdapterInfo, ...]
    max_batch_size: int
