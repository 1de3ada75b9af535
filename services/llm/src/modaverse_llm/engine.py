"""The batched decode loop of the transformers backend (runs on the model thread).

A batch is prefilled once with left-padded ``inputs_embeds`` (text-token embeddings and media rows
spliced in order), then decoded step by step with the KV cache. Between steps every row chooses its
own token with its own sampling values and seeded generator, streams its delta, and may finish (stop
string, EOS, max_tokens, context length) or be cancelled; finished rows are cut out of the batch and
the KV cache, so they cost nothing more. Each row runs its own LoRA adapter (peft ``adapter_names``).
New requests do not join a running batch: they form the next one (see docs/llm.md).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import metrics
from .prompt import PreparedPrompt
from .sampling import choose_token
from .stops import StopScanner
from .types import Completion, Delta, FinishReason, PositionLogprobs, SamplingParams, TokenLogprob

PEFT_BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass
class Job:
    prompt: PreparedPrompt
    sampling: SamplingParams
    adapter: str  # a loaded peft adapter name, or PEFT_BASE
    emit: Callable[[Delta], None]  # thread-safe: hands a delta to the caller's event loop
    cancelled: threading.Event = field(default_factory=threading.Event)


class _Row:
    def __init__(self, job: Job, decode: Callable[[list[int]], str], context_length: int) -> None:
        self.job = job
        self.decode = decode
        self.limit = min(job.sampling.max_tokens, context_length - job.prompt.length)
        self.scanner = StopScanner(job.sampling.stop)
        seed = job.sampling.seed if job.sampling.seed is not None else random.getrandbits(63)
        self.generator = None if job.sampling.greedy else torch.Generator().manual_seed(seed)
        self.ids: list[int] = []
        self.result: Completion | None = None
        self.pending: list[PositionLogprobs] = []  # logprobs of tokens not yet sent with a Delta

    def take_logprobs(self) -> tuple[PositionLogprobs, ...]:
        if not self.pending:
            return ()
        out = tuple(self.pending)
        self.pending.clear()
        return out

    def finish(self, reason: FinishReason) -> None:
        tail = self.scanner.flush()
        if tail and reason is not FinishReason.CANCELLED:
            self.job.emit(Delta(tail, self.take_logprobs()))
        self.result = Completion(
            self.scanner.text,
            self.job.prompt.length,
            len(self.ids),
            reason,
            self.job.prompt.truncated_messages,
            self.take_logprobs(),
        )
        metrics.FINISHED.labels(reason.value).inc()
        metrics.TOKENS.inc(len(self.ids))

    def push(self, token: int, eos: set[int], logprobs: PositionLogprobs | None = None) -> None:
        self.ids.append(token)
        if logprobs is not None:  # sent with the next Delta (held-back text sends none) or the Completion
            self.pending.append(logprobs)
        if token in eos:  # ends the answer; counted as a completion token, never shown
            self.finish(FinishReason.STOP)
            return
        delta = self.scanner.update(self.decode(self.ids))
        if delta:
            self.job.emit(Delta(delta, self.take_logprobs()))
        if self.scanner.stopped:
            self.finish(FinishReason.STOP)
        elif len(self.ids) >= self.limit:
            self.finish(FinishReason.LENGTH)


@dataclass
class ModelHandle:
    """What the loop needs from the loaded model."""

    model: Any  # LlamaForCausalLM or a peft PeftModel around it
    embed: torch.nn.Module
    decode: Callable[[list[int]], str]
    eos: set[int]
    device: torch.device
    dtype: torch.dtype
    context_length: int
    uses_peft: bool
    # The tokenizer's convert_ids_to_tokens (token strings for logprobs); None: decode each id alone.
    token_strings: Callable[[list[int]], list[str]] | None = None


def position_logprobs(
    logits: torch.Tensor, token: int, top: int, token_strings: Callable[[list[int]], list[str]]
) -> PositionLogprobs:
    """log_softmax of one row's raw (vocab,) float32 logits (before penalty, temperature, top-k/p):
    the chosen token's value and the ``top`` most likely tokens, most likely first."""
    logprobs = torch.log_softmax(logits, dim=-1)
    ids, values = [token], [float(logprobs[token])]
    if top > 0:
        best = torch.topk(logprobs, min(top, logprobs.numel()))
        ids += [int(i) for i in best.indices.tolist()]
        values += [float(v) for v in best.values.tolist()]
    entries = [
        TokenLogprob(i, s if s is not None else "", v) for i, s, v in zip(ids, token_strings(ids), values, strict=True)
    ]
    return PositionLogprobs(entries[0], tuple(entries[1:]))


def _embed_prompt(h: ModelHandle, prompt: PreparedPrompt) -> torch.Tensor:
    parts = []
    for piece in prompt.pieces:
        if isinstance(piece, list):
            parts.append(h.embed(torch.tensor(piece, dtype=torch.long, device=h.device)))
        else:
            parts.append(piece.rows.to(device=h.device, dtype=h.dtype))
    return torch.cat(parts, dim=0)


def _forward(
    h: ModelHandle, embeds: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any, names: list[str]
) -> Any:
    kwargs: dict[str, Any] = {"adapter_names": names} if h.uses_peft else {}
    return h.model(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
        **kwargs,
    )


@torch.inference_mode()
def decode_batch(h: ModelHandle, jobs: Sequence[Job]) -> list[Completion]:
    rows = [_Row(job, h.decode, h.context_length) for job in jobs]
    strings = h.token_strings or (lambda ids: [h.decode([i]) for i in ids])
    for row in rows:
        if row.job.cancelled.is_set():
            row.finish(FinishReason.CANCELLED)
    active = [i for i, row in enumerate(rows) if row.result is None]
    if active:
        embeds = [_embed_prompt(h, rows[i].job.prompt) for i in active]
        width = max(e.shape[0] for e in embeds)
        x = torch.zeros(len(active), width, embeds[0].shape[1], dtype=h.dtype, device=h.device)
        mask = torch.zeros(len(active), width, dtype=torch.long, device=h.device)
        for b, e in enumerate(embeds):
            x[b, width - e.shape[0] :] = e  # left padding: every row's last prompt position lines up
            mask[b, width - e.shape[0] :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        names = [rows[i].job.adapter for i in active]
        out = _forward(h, x, mask, pos, None, names)
        cache, logits = out.past_key_values, out.logits[:, -1].float().cpu()  # sampling runs on CPU
        last_pos = pos[:, -1]
    while active:
        keep, tokens = [], []
        for b, i in enumerate(active):
            row = rows[i]
            if row.job.cancelled.is_set():  # the caller went away or its deadline passed
                row.finish(FinishReason.CANCELLED)
                continue
            seen = [*row.job.prompt.text_ids, *row.ids] if row.job.sampling.repetition_penalty != 1.0 else []
            p = row.job.sampling
            token = choose_token(logits[b], p, seen, row.generator)
            entry = position_logprobs(logits[b], token, p.top_logprobs, strings) if p.logprobs else None
            row.push(token, h.eos, entry)
            if row.result is None:
                keep.append(b)
                tokens.append(token)
        if not keep:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=h.device)
            cache.batch_select_indices(index)
            mask, last_pos = mask[index], last_pos[index]
            active = [active[b] for b in keep]
            names = [names[b] for b in keep]
        mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
        last_pos = last_pos + 1
        x = h.embed(torch.tensor(tokens, dtype=torch.long, device=h.device))[:, None]
        out = _forward(h, x, mask, last_pos[:, None], cache, names)
        cache, logits = out.past_key_values, out.logits[:, -1].float().cpu()  # sampling runs on CPU
    return [row.result for row in rows if row.result is not None]
