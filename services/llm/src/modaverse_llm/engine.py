"""The decode loop of the transformers backend: a running batch that rows join and leave at any step
(runs on the model thread; ``scheduler.py`` decides who joins when).

Rows that join are prefilled together (left-padded ``inputs_embeds``: text-token embeddings and media
rows spliced in order, per-row position ids) and written into the batch's KV slabs (``kv.py``),
right-aligned with the rows already decoding. A step chooses every row's token at once on the device
(``sampler.py``; each row its own sampling values and seeded generator), streams each row's delta
(``detokenize.py`` + ``stops.py``), lets rows finish (stop string, EOS, max_tokens, context length)
or be cancelled, and runs the rows still going through the model once. Rows that leave free their
slot at once. Each row runs its own LoRA adapter (peft ``adapter_names``), so one batch mixes adapters;
a model call whose rows all run one adapter (or none) takes peft's single-adapter path instead, which
gives the same logits bit for bit where ``uniform_path_exact`` says so, without the mixed path's
per-layer, per-call bookkeeping.

Deltas (and, through the scheduler, results) for callers on an event loop are not handed over one by
one: ``Outbox`` collects a step's and hands each loop its share in one call (one wake-up of the loop
per step, not one per row and token), in the order they were made.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import metrics
from .detokenize import IncrementalText
from .kv import BatchKV
from .prompt import PreparedPrompt
from .sampler import BatchSampler
from .stops import StopScanner
from .types import Completion, Delta, FinishReason, PositionLogprobs, SamplingParams, TokenLogprob

log = logging.getLogger(__name__)

PEFT_BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass(eq=False)
class Job:
    prompt: PreparedPrompt
    sampling: SamplingParams
    adapter: str  # a loaded peft adapter name, or PEFT_BASE
    # Gets each delta, in order. Without ``loop``: called on the model thread (so it must be
    # thread-safe). With ``loop``: called on that event loop, a step's deltas handed over together.
    emit: Callable[[Delta], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None


def steps_allowed(job: Job, context_length: int) -> int:
    """The most tokens ``job`` may generate: its max_tokens, cut at the context length."""
    return min(job.sampling.max_tokens, context_length - job.prompt.length)


_Call = tuple[Callable[..., object], tuple[object, ...]]


class Outbox:
    """Work for callers' event loops, collected on the model thread and handed over by ``flush``: one
    ``call_soon_threadsafe`` per loop, however many rows and calls it holds (each is a wake-up of the
    loop, and both threads contend for the GIL meanwhile). A loop runs its calls in the order they
    were posted, so a caller's deltas keep their order and come before its result."""

    def __init__(self) -> None:
        self._calls: dict[asyncio.AbstractEventLoop, list[_Call]] = {}

    def post(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: object) -> None:
        """``fn(*args)`` on ``loop`` at the next flush (model thread)."""
        self._calls.setdefault(loop, []).append((fn, args))

    def deliver(self, job: Job, delta: Delta) -> None:
        """``job.emit(delta)``: now when the job has no loop, else on its loop at the next flush."""
        if job.loop is None:
            job.emit(delta)
        else:
            self.post(job.loop, job.emit, delta)

    def flush(self) -> None:
        calls, self._calls = self._calls, {}
        for loop, batch in calls.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_run_calls, batch)


def _run_calls(calls: list[_Call]) -> None:
    """On a caller's loop: one call failing does not keep the others' deltas and results back."""
    for fn, args in calls:
        try:
            fn(*args)
        except Exception:
            log.exception("llm: delivering to a caller failed")


class _Row:
    def __init__(
        self, job: Job, decode: Callable[[list[int]], str], context_length: int, order: int, outbox: Outbox
    ) -> None:
        self.job = job
        self.outbox = outbox
        self.order = order  # admission order: the youngest row is evicted first
        self.limit = steps_allowed(job, context_length)
        self.text = IncrementalText(decode)
        self.scanner = StopScanner(job.sampling.stop)
        seed = job.sampling.seed if job.sampling.seed is not None else random.getrandbits(63)
        self.generator = None if job.sampling.greedy else torch.Generator().manual_seed(seed)
        self.drawn: float | None = None  # this step's random number, until its token is pushed
        self.result: Completion | None = None
        self.pending: list[PositionLogprobs] = []  # logprobs of tokens not yet sent with a Delta

    @property
    def ids(self) -> list[int]:
        return self.text.ids

    @property
    def remaining(self) -> int:
        return self.limit - len(self.ids)

    def uniform(self) -> float:
        """This row's next random number (its own stream: the same alone or batched). Asked again
        before a token is pushed (the step failed, e.g. out of memory, and is retried), it is the
        same number: a retried step draws what the step would have drawn."""
        if self.generator is None:
            return 0.0
        if self.drawn is None:
            self.drawn = float(torch.rand(1, generator=self.generator))
        return self.drawn

    def take_logprobs(self) -> tuple[PositionLogprobs, ...]:
        if not self.pending:
            return ()
        out = tuple(self.pending)
        self.pending.clear()
        return out

    def finish(self, reason: FinishReason) -> None:
        tail = self.scanner.flush()
        if tail and reason is not FinishReason.CANCELLED:
            self.outbox.deliver(self.job, Delta(tail, self.take_logprobs()))
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
        self.drawn = None  # used: the next step draws a new number
        if logprobs is not None:  # sent with the next Delta (held-back text sends none) or the Completion
            self.pending.append(logprobs)
        if token in eos:  # ends the answer; counted as a completion token, never shown
            self.ids.append(token)
            self.finish(FinishReason.STOP)
            return
        delta = self.scanner.update(self.text.push(token))
        if delta:
            self.outbox.deliver(self.job, Delta(delta, self.take_logprobs()))
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
    # Loaded adapters for which ``uniform_path_exact`` holds (whoever loads and unloads adapters keeps it):
    # a call whose rows all run one of them, or all none while every loaded adapter is here, skips
    # peft's mixed-batch path.
    uniform: set[str] = field(default_factory=set)
    adapters_off: bool = False  # peft's adapter layers are disabled (the last call ran no adapter)


def batch_logprobs(
    logits: torch.Tensor, tokens: Sequence[int], tops: Sequence[int], token_strings: Callable[[list[int]], list[str]]
) -> list[PositionLogprobs]:
    """log_softmax of rows of raw (n, vocab) logits (before penalty, temperature, top-k/p): each
    row's chosen token and its ``tops[i]`` most likely tokens, most likely first (one transfer)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor(list(tokens), device=logits.device)[:, None])[:, 0].tolist()
    k = min(max(tops, default=0), logprobs.shape[-1])
    best = torch.topk(logprobs, k) if k else None
    best_ids = best.indices.tolist() if best is not None else [[] for _ in tokens]
    best_values = best.values.tolist() if best is not None else [[] for _ in tokens]
    out = []
    for token, value, top, ids, values in zip(tokens, chosen, tops, best_ids, best_values, strict=True):
        row_ids, row_values = [token, *ids[:top]], [value, *values[:top]]
        entries = [
            TokenLogprob(i, s if s is not None else "", float(v))
            for i, s, v in zip(row_ids, token_strings(row_ids), row_values, strict=True)
        ]
        out.append(PositionLogprobs(entries[0], tuple(entries[1:])))
    return out


def position_logprobs(
    logits: torch.Tensor, token: int, top: int, token_strings: Callable[[list[int]], list[str]]
) -> PositionLogprobs:
    """``batch_logprobs`` of one row's (vocab,) logits."""
    return batch_logprobs(logits[None], [token], [top], token_strings)[0]


def _embed_prompt(h: ModelHandle, prompt: PreparedPrompt) -> torch.Tensor:
    parts = []
    for piece in prompt.pieces:
        if isinstance(piece, list):
            parts.append(h.embed(torch.tensor(piece, dtype=torch.long, device=h.device)))
        else:
            parts.append(piece.rows.to(device=h.device, dtype=h.dtype))
    return torch.cat(parts, dim=0)


def uniform_path_exact(model: Any, name: str) -> bool:
    """Whether peft's single-adapter path (adapter ``name`` active, every row) gives bit for bit the
    logits of its mixed-batch path (``adapter_names``, every row ``name``): plain LoRA (no variant such
    as DoRA, no modules_to_save, no trainable tokens) on Linear layers only, whose LoRA weights have
    the base layer's dtype. (The mixed path casts each sub-batch's LoRA output to the layer's dtype
    before adding it; the single path adds first. peft keeps LoRA weights in float32 under a float16 or
    bfloat16 model unless told otherwise, so on such a model the two round differently.)"""
    from peft import PeftType
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    config = model.peft_config.get(name)
    if config is None or config.peft_type != PeftType.LORA or getattr(config, "bias", "none") != "none":
        return False
    if getattr(config, "modules_to_save", None) or getattr(config, "trainable_token_indices", None):
        return False
    for module in model.modules():
        if not isinstance(module, LoraLayer) or not _holds(module, name):
            continue
        if not isinstance(module, LoraLinear) or name in module.lora_variant:
            return False
        base = module.get_base_layer().weight.dtype
        if module.lora_A[name].weight.dtype != base or module.lora_B[name].weight.dtype != base:
            return False
    return True


def _holds(layer: Any, name: str) -> bool:
    return any(name in getattr(layer, attr) for attr in layer.adapter_layer_names)


def enable_adapter_layers(h: ModelHandle) -> None:
    """Undo what a call that ran no adapter left (model thread): before adapters are loaded or unloaded."""
    if h.adapters_off:
        h.model.base_model.enable_adapter_layers()
        h.adapters_off = False


def _adapter_kwargs(h: ModelHandle, names: list[str]) -> dict[str, Any]:
    """The model call's adapter keywords, the model set up for them (model thread only): peft's
    mixed-batch path (``adapter_names``), unless every row runs the same adapter and ``h.uniform``
    says that the single-adapter path gives the same logits. Then that adapter is made the active
    one, or for rows that run none, peft's adapter layers are disabled. Either stays so until a call
    needs otherwise: switching costs a walk over the model's modules, cheap next to a step but not
    nothing (peft's ``disable_adapter()`` context, entered per call, costs more than the mixed path)."""
    if not h.uses_peft:
        return {}
    first = names[0] if names else PEFT_BASE
    uniform = all(n == first for n in names)
    off = uniform and first == PEFT_BASE and h.uniform.issuperset(h.model.peft_config)
    if off and not h.adapters_off:
        h.model.base_model.disable_adapter_layers()
        h.adapters_off = True
    elif not off:
        enable_adapter_layers(h)
    if off:
        return {}
    if uniform and first in h.uniform:
        if h.model.active_adapters != [first]:
            h.model.set_adapter(first, inference_mode=True)
        return {}
    return {"adapter_names": names}


def _forward(
    h: ModelHandle, embeds: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any, names: list[str]
) -> Any:
    return h.model(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
        **_adapter_kwargs(h, names),
    )


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    return t if t.shape[1] == width else torch.cat([t.new_zeros(t.shape[0], width - t.shape[1]), t], dim=1)


class Engine:
    """The running batch (model thread only). Between steps, ``admit`` adds rows; a step is ``sample``
    (every row's next token; finished rows leave) then ``forward`` (the tokens through the model)."""

    def __init__(self, h: ModelHandle, max_rows: int, max_kv_tokens: int) -> None:
        self.h = h
        self.max_rows = max_rows
        self.max_kv_tokens = max_kv_tokens  # KV positions the slabs may hold (rows × columns)
        self._orders = itertools.count()
        self._vocab = 0
        self.outbox = Outbox()  # deltas for callers' loops; whoever steps the engine flushes it
        self._reset()

    def _reset(self) -> None:
        self.rows: list[_Row] = []
        self.kv: BatchKV | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.h.device)  # (rows, window) attention mask
        self._positions = torch.zeros(0, dtype=torch.long, device=self.h.device)  # each row's last position
        self._names: list[str] = []  # each row's adapter
        self._sampler = BatchSampler(self._vocab, self.h.device) if self._vocab else None
        self._logits: torch.Tensor | None = None  # (rows, vocab) float32: next tokens not chosen yet
        self._feed: torch.Tensor | None = None  # (rows,) chosen tokens not run through the model yet

    # -- what admission needs to know ---------------------------------------------------------------
    @property
    def needs_forward(self) -> bool:
        return self._feed is not None

    def uses_adapter(self, name: str) -> bool:
        return name in self._names

    def kv_needed(self, jobs: Sequence[Job]) -> int:
        """KV positions the batch needs once ``jobs`` join: rows × (the padded width + the most steps
        any row still has). What the slabs must hold, whatever order the rows finish in."""
        if not jobs:
            return 0 if self.kv is None else len(self.rows) * (self.kv.width + self._tail([]))
        width = max(job.prompt.length for job in jobs)
        if self.kv is not None:
            width = max(width, self.kv.width)
        return (len(self.rows) + len(jobs)) * (width + self._tail(jobs))

    def _tail(self, jobs: Sequence[Job]) -> int:
        steps = [row.remaining for row in self.rows]
        steps += [steps_allowed(job, self.h.context_length) for job in jobs]
        return max(steps, default=0)

    @property
    def kv_positions(self) -> int:
        return 0 if self.kv is None else self.kv.positions

    # -- joining ------------------------------------------------------------------------------------
    def admit(self, jobs: Sequence[Job]) -> list[_Row]:
        """Prefill ``jobs`` and add them to the batch (their first token is chosen by the next
        ``sample``). Returns their rows; a job already cancelled is finished without running.
        Raises what the model raises (e.g. out of memory), leaving the batch as it was."""
        assert not self.needs_forward, "admit between forward and sample"
        rows = [_Row(job, self.h.decode, self.h.context_length, next(self._orders), self.outbox) for job in jobs]
        for row in rows:
            if row.job.cancelled.is_set():
                row.finish(FinishReason.CANCELLED)
        live = [row for row in rows if row.result is None]
        if live:
            self._join(live)
        return rows

    def _prefill(self, rows: Sequence[_Row]) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.h
        embeds = [_embed_prompt(h, row.job.prompt) for row in rows]
        width = max(e.shape[0] for e in embeds)
        x = torch.zeros(len(rows), width, embeds[0].shape[1], dtype=h.dtype, device=h.device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=h.device)
        for b, e in enumerate(embeds):
            x[b, width - e.shape[0] :] = e  # left padding: every row's last prompt position lines up
            mask[b, width - e.shape[0] :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = _forward(h, x, mask, pos, None, [row.job.adapter for row in rows])
        metrics.PREFILLS.inc()
        return out.past_key_values, out.logits[:, -1].float(), mask, pos[:, -1]

    def _join(self, rows: list[_Row]) -> None:
        cache, logits, mask, last = self._prefill(rows)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        width = mask.shape[1]
        tail = max(max(row.remaining for row in rows), self._tail([]))
        kv = self._room(layers, len(rows), width, tail)
        # Everything that allocates comes first: if memory runs out, the batch is as it was.
        window = max(width, kv.width if kv.rows else 0)
        new_mask = torch.cat([_pad_left(self._mask, window), _pad_left(mask, window)])
        new_positions = torch.cat([self._positions, last])
        new_logits = logits if self._logits is None else torch.cat([self._logits, logits])
        sampler = self._sampler or BatchSampler(logits.shape[-1], self.h.device)
        sampler.add(
            [row.job.sampling for row in rows],
            [row.job.prompt.text_ids if row.job.sampling.repetition_penalty != 1.0 else [] for row in rows],
        )
        kv.add_rows(layers)
        self.kv, self._sampler, self._vocab = kv, sampler, logits.shape[-1]
        self._mask, self._positions, self._logits = new_mask, new_positions, new_logits
        self._names += [row.job.adapter for row in rows]
        self.rows += rows

    def _room(self, layers: list[tuple[torch.Tensor, torch.Tensor]], rows: int, width: int, tail: int) -> BatchKV:
        """Slabs that take ``rows`` more rows of ``width``: the current ones, or larger ones with some
        headroom (so that the next rows to join rarely move the batch), within ``max_kv_tokens``."""
        if self.kv is not None and self.kv.fits(rows, width, tail):
            return self.kv
        need_rows = len(self.rows) + rows
        end = max(width, self.kv.width if self.kv is not None else 0)
        need_columns = end + tail
        budget = max(self.max_kv_tokens, need_rows * need_columns)  # admission kept need within it
        columns = min(need_columns + need_columns // 2, max(need_columns, budget // need_rows))
        cap_rows = min(self.max_rows, 2 * need_rows, max(need_rows, budget // columns))
        if self.kv is None:
            return BatchKV.allocate(layers, cap_rows, columns, end)
        return self.kv.rebuilt(cap_rows, columns, end)

    # -- a step -------------------------------------------------------------------------------------
    def sample(self) -> list[_Row]:
        """Choose every row's next token and stream it (deltas for callers' loops wait in
        ``outbox`` for its flush); returns the rows that finished (they have left the batch)."""
        assert self._logits is not None and self._sampler is not None
        h = self.h
        uniforms = torch.tensor([row.uniform() for row in self.rows])
        tokens = self._sampler.sample(self._logits, uniforms)
        chosen = tokens.tolist()
        entries: dict[int, PositionLogprobs] = {}
        asking = [b for b, row in enumerate(self.rows) if row.job.sampling.logprobs]
        if asking:
            strings = h.token_strings or (lambda ids: [h.decode([i]) for i in ids])
            index = torch.tensor(asking, device=h.device)
            tops = [self.rows[b].job.sampling.top_logprobs for b in asking]
            found = batch_logprobs(self._logits[index], [chosen[b] for b in asking], tops, strings)
            entries = dict(zip(asking, found, strict=True))
        self._sampler.observe(tokens)
        gone = set()
        for b, row in enumerate(self.rows):
            if row.job.cancelled.is_set():  # the caller went away or its deadline passed
                row.finish(FinishReason.CANCELLED)
            else:
                row.push(chosen[b], h.eos, entries.get(b))
            if row.result is not None:
                gone.add(b)
        self._logits, self._feed = None, tokens
        finished = [self.rows[b] for b in sorted(gone)]
        self._drop(gone)
        return finished

    def forward(self) -> None:
        """Run the chosen tokens through the model. Raises what the model raises (e.g. out of
        memory), leaving the batch as it was before the call."""
        assert self._feed is not None and self.kv is not None
        h = self.h
        mask = torch.cat([self._mask, self._mask.new_ones(len(self.rows), 1)], dim=1)
        positions = self._positions + 1
        x = h.embed(self._feed.to(h.device))[:, None]
        try:
            out = _forward(h, x, mask, positions[:, None], self.kv, self._names)
        except BaseException:
            self.kv.rollback()
            raise
        self.kv.commit()
        metrics.STEP_ROWS.observe(len(self.rows))
        self._mask, self._positions = mask, positions
        self._logits, self._feed = out.logits[:, -1].float(), None

    # -- leaving ------------------------------------------------------------------------------------
    def evict_youngest(self) -> _Row:
        """Take the most recently admitted row out of the batch (to retry a step that ran out of memory)."""
        b = max(range(len(self.rows)), key=lambda i: self.rows[i].order)
        row = self.rows[b]
        self._drop({b})
        return row

    def clear(self) -> list[_Row]:
        """Drop every row and the cache; returns the rows that were running."""
        rows = self.rows
        self._reset()
        return rows

    def _drop(self, gone: set[int]) -> None:
        """Rows ``gone`` leave: rows from the tail move into their slots, padding no row needs is trimmed."""
        if not gone:
            return
        n = len(self.rows) - len(gone)
        if n == 0:
            self._reset()  # frees the slabs
            return
        holes = [b for b in range(n) if b in gone]
        movers = [b for b in range(n, len(self.rows)) if b not in gone]
        order = list(range(n))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        assert self.kv is not None and self._sampler is not None
        self.kv.move_rows(holes, movers, n)
        index = torch.tensor(order, device=self.h.device)
        self.rows = [self.rows[b] for b in order]
        self._names = [self._names[b] for b in order]
        self._mask, self._positions = self._mask[index], self._positions[index]
        self._sampler.reorder(order)
        if self._logits is not None:
            self._logits = self._logits[index]
        if self._feed is not None:
            self._feed = self._feed[index]
        unused = int(self._mask.any(dim=0).int().argmax())  # leading columns every row masks
        if unused:
            self._mask = self._mask[:, unused:]
            self.kv.trim(unused)


def run_to_completion(engine: Engine) -> Iterator[_Row]:
    """Step ``engine`` until its batch is empty, yielding rows as they finish."""
    while engine.rows:
        finished = engine.sample()
        engine.outbox.flush()
        yield from finished
        if engine.rows:
            engine.forward()


@torch.inference_mode()
def decode_batch(h: ModelHandle, jobs: Sequence[Job]) -> list[Completion]:
    """Run ``jobs`` together to the end on this thread (no scheduler); one Completion per job, in order."""
    engine = Engine(h, max_rows=max(1, len(jobs)), max_kv_tokens=0)
    rows = engine.admit(jobs)
    for _ in run_to_completion(engine):
        pass
    return [row.result for row in rows if row.result is not None]
