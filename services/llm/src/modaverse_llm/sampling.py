"""Sampling parameters: validation (clear INVALID_ARGUMENT messages) and the per-row token choice
(the reference for the batched ``sampler.BatchSampler``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from modaverse_runtime.errors import InvalidArgument

from .types import SamplingParams

MAX_TOP_LOGPROBS = 20  # as OpenAI's top_logprobs


def validate_sampling(p: SamplingParams, max_tokens_cap: int, max_stop: int, max_stop_chars: int) -> None:
    if not 1 <= p.max_tokens <= max_tokens_cap:
        raise InvalidArgument(f"sampling.max_tokens must be in [1, {max_tokens_cap}], got {p.max_tokens}")
    if not math.isfinite(p.temperature) or p.temperature < 0 or p.temperature > 100:
        raise InvalidArgument(f"sampling.temperature must be in [0, 100] (0 = greedy), got {p.temperature}")
    if not math.isfinite(p.top_p) or not 0 < p.top_p <= 1:
        raise InvalidArgument(f"sampling.top_p must be in (0, 1], got {p.top_p}")
    if p.top_k < 0 or p.top_k > 1_000_000:
        raise InvalidArgument(f"sampling.top_k must be in [0, 1000000] (0 = off), got {p.top_k}")
    if not math.isfinite(p.repetition_penalty) or not 0 < p.repetition_penalty <= 10:
        raise InvalidArgument(f"sampling.repetition_penalty must be in (0, 10], got {p.repetition_penalty}")
    if p.seed is not None and not 0 <= p.seed < 2**63:
        raise InvalidArgument("sampling.seed must be below 2**63")
    if len(p.stop) > max_stop:
        raise InvalidArgument(f"sampling.stop has {len(p.stop)} strings; at most {max_stop} are allowed")
    for i, s in enumerate(p.stop):
        if not s or len(s) > max_stop_chars:
            raise InvalidArgument(f"sampling.stop[{i}] must have 1 to {max_stop_chars} characters")
    if not 0 <= p.top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidArgument(f"sampling.top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {p.top_logprobs}")
    if p.top_logprobs and not p.logprobs:
        raise InvalidArgument("sampling.top_logprobs needs sampling.logprobs = true")


def penalised(logits: torch.Tensor, p: SamplingParams, seen: Sequence[int]) -> torch.Tensor:
    """One row's (vocab,) logits after the repetition penalty on the ``seen`` tokens (HF's rule)."""
    if p.repetition_penalty == 1.0 or not seen:
        return logits
    idx = torch.tensor(sorted(set(seen)), dtype=torch.long)
    picked = logits[idx]
    logits = logits.clone()
    logits[idx] = torch.where(picked < 0, picked * p.repetition_penalty, picked / p.repetition_penalty)
    return logits


def token_probabilities(logits: torch.Tensor, p: SamplingParams, seen: Sequence[int]) -> torch.Tensor:
    """The distribution a non-greedy row draws from: penalty, temperature, top-k, top-p over its
    (vocab,) float32 logits, as HF's processors order them."""
    logits = penalised(logits, p, seen) / p.temperature
    if p.top_k > 0 and p.top_k < logits.numel():
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    if p.top_p < 1.0:
        # Keep the smallest set of most likely tokens whose mass reaches top_p (the first always stays).
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= p.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return probs


def choose_token(
    logits: torch.Tensor, p: SamplingParams, seen: Sequence[int], generator: torch.Generator | None
) -> int:
    """One row's next token from its (vocab,) float32 logits: argmax after the penalty (greedy) or a
    seeded draw from ``token_probabilities``. The per-row reference: the engine chooses for the whole
    batch at once (``sampler.BatchSampler``), tested against this."""
    if p.greedy:
        return int(torch.argmax(penalised(logits, p, seen)))
    return int(torch.multinomial(token_probabilities(logits, p, seen), 1, generator=generator))
