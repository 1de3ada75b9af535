"""Token choice for a whole batch at once, on the model's device.

The processors and their order are ``sampling.choose_token``'s (the per-row reference; tests hold
the two to the same answers): repetition penalty, temperature, top-k, top-p, then argmax (greedy)
or a draw. Each step costs one top-k of ``CANDIDATES`` per batch (one full sort only when some
row's nucleus or top-k reaches past them), not one vocabulary sort per row in Python.

A draw is inverse-CDF sampling with one uniform number per row, taken from that row's own seeded
generator by the caller; the batch never shares a random stream, so a seeded request gets the same
tokens whatever else runs with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .types import SamplingParams

# Tokens considered before falling back to a full sort. The release's top_p 0.01 keeps one token of a
# trained model; 64 covers the nucleus of every ordinary setting and is cheap to find.
CANDIDATES = 64


class BatchSampler:
    """The sampling values of the batch's rows as device tensors, in row order."""

    def __init__(self, vocab: int, device: torch.device) -> None:
        self.vocab = vocab
        self.device = device
        self.params: list[SamplingParams] = []
        self._greedy = torch.zeros(0, dtype=torch.bool, device=device)
        self._temperature = torch.ones(0, device=device)
        self._top_k = torch.zeros(0, dtype=torch.long, device=device)  # the vocabulary size when off
        self._top_p = torch.ones(0, device=device)
        self._penalty = torch.ones(0, device=device)
        # (rows, n): the token ids each row's repetition penalty applies to, padded with ``vocab`` (a
        # dummy column); duplicates are harmless, as each writes the same value.
        self._seen = torch.zeros(0, 0, dtype=torch.long, device=device)
        self._flags()

    def __len__(self) -> int:
        return len(self.params)

    def _flags(self) -> None:
        """What the batch needs, known on the host (no device sync to decide)."""
        v, k = self.vocab, min(CANDIDATES, self.vocab)
        drawn = [p for p in self.params if not p.greedy]
        self._penalised = any(p.repetition_penalty != 1.0 for p in self.params)
        self._any_greedy = len(drawn) < len(self.params)
        self._all_greedy = not drawn
        # A top-k between the candidates and the vocabulary needs the k-th value: sort everything.
        self._sort = k < v and any(k < p.top_k < v for p in drawn)
        # Rows without top-k need the whole vocabulary's normaliser (and their nucleus checked).
        self._whole = any(not 0 < p.top_k <= k for p in drawn)

    def add(self, params: Sequence[SamplingParams], seen: Sequence[Sequence[int]]) -> None:
        """Append rows; ``seen[i]``: the token ids row i's repetition penalty starts from (its prompt)."""
        v = self.vocab
        greedy = [p.greedy for p in params]
        # Greedy rows take neutral values so they never force the slower paths.
        temperature = [1.0 if g else p.temperature for p, g in zip(params, greedy, strict=True)]
        top_k = [v if g or not 0 < p.top_k < v else p.top_k for p, g in zip(params, greedy, strict=True)]
        top_p = [1.0 if g else p.top_p for p, g in zip(params, greedy, strict=True)]
        ids = [sorted(set(i)) if p.repetition_penalty != 1.0 else [] for p, i in zip(params, seen, strict=True)]
        width = max([self._seen.shape[1], *(len(i) for i in ids)])
        new_seen = torch.tensor([[*i, *[v] * (width - len(i))] for i in ids], dtype=torch.long, device=self.device)

        def cat(old: torch.Tensor, new: list[float] | list[int] | list[bool], dtype: torch.dtype) -> torch.Tensor:
            return torch.cat([old, torch.tensor(new, dtype=dtype, device=self.device)])

        # All new tensors first, then one assignment: running out of memory here changes nothing.
        state = (
            cat(self._greedy, greedy, torch.bool),
            cat(self._temperature, temperature, torch.float32),
            cat(self._top_k, top_k, torch.long),
            cat(self._top_p, top_p, torch.float32),
            cat(self._penalty, [p.repetition_penalty for p in params], torch.float32),
            torch.cat([_pad(self._seen, width, v), new_seen.view(len(params), width)]),
        )
        self._greedy, self._temperature, self._top_k, self._top_p, self._penalty, self._seen = state
        self.params = [*self.params, *params]
        self._flags()

    def reorder(self, order: Sequence[int]) -> None:
        """Keep rows ``order`` (old indices), in that order."""
        index = torch.tensor(list(order), dtype=torch.long, device=self.device)
        self.params = [self.params[i] for i in order]
        self._greedy, self._temperature = self._greedy[index], self._temperature[index]
        self._top_k, self._top_p, self._penalty = self._top_k[index], self._top_p[index], self._penalty[index]
        self._seen = self._seen[index]
        self._flags()

    def observe(self, tokens: torch.Tensor) -> None:
        """The rows' chosen tokens (B,), on the device: the penalty applies to them from now on."""
        if self._penalised:
            column = torch.where(self._penalty != 1.0, tokens, self.vocab)
            self._seen = torch.cat([self._seen, column[:, None]], dim=1)

    def sample(self, logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Each row's next token (B,) from its (B, V) float32 logits (left unchanged); ``uniforms``
        (B,): one number in [0, 1) per row from its own generator (ignored for greedy rows)."""
        if self._penalised:
            # Only the seen positions change: gather them, penalise, scatter back (into a copy with a
            # dummy last column that the padding lands in).
            widened = torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)
            picked = widened.gather(1, self._seen)
            pen = self._penalty[:, None]
            widened.scatter_(1, self._seen, torch.where(picked < 0, picked * pen, picked / pen))
            logits = widened[:, : self.vocab]
        if self._all_greedy:
            return logits.argmax(dim=-1)
        scaled = logits / self._temperature[:, None]
        sampled = self._draw(scaled, uniforms.to(self.device))
        return torch.where(self._greedy, logits.argmax(dim=-1), sampled) if self._any_greedy else sampled

    def _draw(self, scaled: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        v = self.vocab
        k = min(CANDIDATES, v)
        if self._sort:
            return self._draw_sorted(*scaled.sort(dim=-1, descending=True), uniforms, None)
        values, ids = scaled.topk(k, dim=-1)  # sorted, most likely first
        if not self._whole or k == v:
            return self._draw_sorted(values, ids, uniforms, None)
        # Rows without top-k normalise over the whole vocabulary; the rest over their top-k.
        whole = torch.logsumexp(scaled, dim=-1)
        token = self._draw_sorted(values, ids, uniforms, torch.where(self._top_k <= k, math.nan, whole))
        # The nucleus of a row without top-k must lie inside the candidates, else sort everything.
        mass = torch.exp(values - whole[:, None]).sum(dim=-1)
        outside = ~self._greedy & (self._top_k > k) & ((self._top_p >= 1.0) | (mass < self._top_p))
        if bool(outside.any()):
            return self._draw_sorted(*scaled.sort(dim=-1, descending=True), uniforms, None)
        return token

    def _draw_sorted(
        self, values: torch.Tensor, ids: torch.Tensor, uniforms: torch.Tensor, norm: torch.Tensor | None
    ) -> torch.Tensor:
        """Top-k, top-p and the draw over each row's most likely tokens ``values`` (descending) and
        their ``ids``. ``norm``: a row's log-normaliser over the whole vocabulary, NaN where it is
        over its own top-k (None: every row's)."""
        width = values.shape[-1]
        kth = values.gather(1, (self._top_k.clamp(max=width) - 1)[:, None])
        values = values.masked_fill(values < kth, -math.inf)  # ties with the k-th stay, as with torch.topk
        own = torch.logsumexp(values, dim=-1)
        log_norm = own if norm is None else torch.where(torch.isnan(norm), own, norm)
        probs = torch.exp(values - log_norm[:, None])
        # Keep the smallest set of most likely tokens whose mass reaches top_p (the first always stays).
        before = torch.cumsum(probs, dim=-1) - probs
        nucleus = (before >= self._top_p[:, None]) & (self._top_p < 1.0)[:, None]
        probs = probs.masked_fill(nucleus, 0.0)
        cdf = torch.cumsum(probs, dim=-1)
        target = (uniforms * cdf[:, -1])[:, None]
        pick = torch.searchsorted(cdf, target, right=True)
        kept = (probs > 0).sum(dim=-1, keepdim=True)  # kept tokens are a prefix of the sorted ones
        pick = torch.minimum(pick, (kept - 1).clamp(min=0))
        return ids.gather(1, pick)[:, 0]


def _pad(ids: torch.Tensor, width: int, value: int) -> torch.Tensor:
    if ids.shape[1] == width:
        return ids
    return torch.cat([ids, ids.new_full((ids.shape[0], width - ids.shape[1]), value)], dim=1)
