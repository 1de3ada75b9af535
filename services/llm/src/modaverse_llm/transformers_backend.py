"""The transformers + peft backend: one model on one thread, requests batched by a MicroBatcher.

Everything that touches the model (batches, adapter loads/unloads) runs on the same single-thread
executor, so an adapter never changes under a running batch; such changes land between batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from modaverse_runtime.batching import MicroBatcher
from modaverse_runtime.devices import resolve_device, resolve_dtype
from modaverse_runtime.errors import InvalidArgument, ModaverseError, NotFound

from .artifacts import resolve_artifacts
from .base import LLMBackend
from .compat import prime_transformers
from .engine import PEFT_BASE, Job, ModelHandle, decode_batch
from .prompt import PromptBuilder
from .settings import LLMSettings
from .tokenizer import check_vocabulary, load_tokenizer
from .types import AdapterInfo, Completion, Delta, Event, GenerationRequest

log = logging.getLogger(__name__)


class TransformersBackend(LLMBackend):
    name = "transformers"

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__(settings)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llm-model")
        self._handle: ModelHandle | None = None
        self._tokenizer: Any = None
        self._adapters: dict[str, str] = {}  # name -> path
        self._batcher: MicroBatcher[Job, Completion | ModaverseError] | None = None

    # -- loading (blocking; the server calls it off the loop) ---------------------------------------
    def _load(self) -> None:
        prime_transformers()
        from transformers import AutoModelForCausalLM

        artifacts = resolve_artifacts(self.settings)
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        device = resolve_device(self.settings.device)
        dtype = resolve_dtype(self.settings.dtype, device)
        self._tokenizer = load_tokenizer(artifacts.base)
        model = AutoModelForCausalLM.from_pretrained(artifacts.base, dtype=dtype)
        check_vocabulary(self._tokenizer, int(model.config.vocab_size), artifacts.base)
        model = model.to(device).eval()  # type: ignore[arg-type]
        self.model_name = artifacts.base
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        if self._tokenizer.eos_token_id is not None:
            eos_ids.add(int(self._tokenizer.eos_token_id))
        self.hidden_size = int(model.config.hidden_size)
        self.dtype = dtype
        self.context_length = self.settings.context_length or int(model.config.max_position_embeddings)
        self.builder = PromptBuilder(self._tokenizer)
        tokenizer = self._tokenizer
        self._handle = ModelHandle(
            model=model,
            embed=model.get_input_embeddings(),
            decode=lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
            eos=eos_ids,
            device=device,
            dtype=dtype,
            context_length=self.context_length,
            uses_peft=False,
            token_strings=lambda ids: list(tokenizer.convert_ids_to_tokens(ids)),
        )
        for name, path in artifacts.adapters.items():
            self._attach(name, str(path))
        self._default = self.settings.default_adapter if self.settings.default_adapter in self._adapters else ""
        self._batcher = MicroBatcher(
            "llm",
            self._run_batch,
            executor=self._executor,
            max_items=self.settings.effective_max_batch,
            max_wait_ms=self.settings.batch_max_wait_ms,
            max_queue=self.settings.max_queue,
        )

    def _unload(self) -> None:
        self._handle = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()

    def describe(self) -> str:
        return f"transformers({self.model_name}, adapters={sorted(self._adapters)})"

    # -- adapters (model thread) -------------------------------------------------------------------
    def _attach(self, name: str, path: str) -> None:
        from peft import PeftModel

        h = self._handle
        assert h is not None
        if not (Path(path) / "adapter_config.json").is_file():
            raise InvalidArgument(f"{path!r} is not a peft adapter folder (no adapter_config.json)")
        try:
            if h.uses_peft:
                h.model.load_adapter(path, adapter_name=name)
            else:
                h.model = PeftModel.from_pretrained(h.model, path, adapter_name=name).eval()
                h.uses_peft = True
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            raise InvalidArgument(f"adapter {name!r} at {path!r} does not fit this model: {exc}") from exc
        self._adapters[name] = path

    def _detach(self, name: str) -> None:
        h = self._handle
        assert h is not None
        if len(self._adapters) == 1:
            h.model = h.model.unload()  # back to the plain model: peft keeps no empty wrapper
            h.uses_peft = False
        else:
            if name in h.model.active_adapters:  # move off it first: peft warns when deleting the active one
                h.model.set_adapter(next(n for n in self._adapters if n != name))
            h.model.delete_adapter(name)
        del self._adapters[name]

    def _rank(self, name: str) -> int:
        h = self._handle
        config = h.model.peft_config.get(name) if h is not None and h.uses_peft else None
        return int(getattr(config, "r", 0) or 0)

    def adapter_info(self, name: str) -> AdapterInfo:
        return AdapterInfo(name, self._adapters[name], self._rank(name), name == self._default)

    async def load_adapter(self, name: str, path: str, make_default: bool) -> AdapterInfo:
        self.check_new_adapter(name)
        if not path:
            raise InvalidArgument("path is empty: give a peft adapter folder readable by the server")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._attach, name, path)
        if make_default:
            self._default = name
        return self.adapter_info(name)

    async def unload_adapter(self, name: str) -> None:
        self.check_unloadable(name)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._detach, name)

    @property
    def loaded_adapters(self) -> Collection[str]:
        return self._adapters.keys()

    def resolve_adapter(self, requested: str) -> str:
        return self.requested_adapter(requested) or PEFT_BASE

    # -- generation --------------------------------------------------------------------------------
    def _run_batch(self, jobs: Sequence[Job]) -> list[Completion | ModaverseError]:
        h = self._handle
        assert h is not None
        missing = {j.adapter for j in jobs} - {*self._adapters, PEFT_BASE}
        if missing:  # unloaded while these requests waited: fail only them
            ok = [j for j in jobs if j.adapter not in missing]
            done = dict(zip(map(id, ok), decode_batch(h, ok), strict=True))
            error = NotFound(f"adapter(s) {sorted(missing)} were unloaded while the request waited")
            return [done.get(id(j), error) for j in jobs]
        return list(decode_batch(h, jobs))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        prompt = self.prepare(request)
        adapter = self.resolve_adapter(request.adapter)
        assert self._batcher is not None
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Delta] = asyncio.Queue()

        def emit(delta: Delta) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, delta)

        job = Job(prompt, request.sampling, adapter, emit)
        done = asyncio.ensure_future(self._batcher.submit(job))
        try:
            while not done.done():
                getter = asyncio.ensure_future(deltas.get())
                await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            while not deltas.empty():
                yield deltas.get_nowait()
            result = done.result()
            if isinstance(result, ModaverseError):
                raise result
            yield result
        finally:
            job.cancelled.set()  # stops the row at the next decode step; frees its batch slot
            done.cancel()
