"""The transformers + peft backend: one model on one thread, requests batched step by step.

Everything that touches the model (decode steps, adapter loads/unloads) runs on the scheduler's one
model thread (``scheduler.py``), so an adapter never changes during a step; such changes land between
steps, and an unload waits until no running row uses the adapter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection
from typing import Any, Literal

import torch
from pydantic import Field

from modaverse_runtime.devices import resolve_device, resolve_dtype
from modaverse_runtime.errors import InvalidArgument, Unavailable

from .artifacts import resolve_artifacts
from .base import LLMBackend, check_adapter_folder
from .compat import prime_transformers
from .engine import PEFT_BASE, Engine, Job, ModelHandle, enable_adapter_layers, uniform_path_exact
from .prompt import PromptBuilder
from .scheduler import Policy, Scheduler
from .settings import LLMSettings
from .tokenizer import check_vocabulary, load_tokenizer
from .types import AdapterInfo, Delta, Event, GenerationRequest

log = logging.getLogger(__name__)


class TransformersSettings(LLMSettings):
    """What only this backend reads: its model thread and its scheduler."""

    torch_threads: int = Field(
        0, ge=0, le=256, description="intra-op CPU threads for the model; 0 = torch's default (1 beats 2 on busy CPUs)"
    )
    llm_scheduler: Literal["continuous", "static"] = Field(
        "continuous",
        description="continuous: requests join the running batch at the next step; static: a batch forms "
        "only when the previous one has ended (the old behaviour)",
    )
    llm_join_wait_ms: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="continuous scheduler: the longest a request waits to join a running batch while too few "
        "others wait to join with it (a join is a model call of its own)",
    )
    max_kv_tokens: int = Field(
        0,
        ge=0,
        description="KV-cache positions the running batch may hold (rows x padded length, per layer); "
        "requests wait while more would be needed; 0 = max_batch_size x context length",
    )


class TransformersBackend(LLMBackend):
    name = "transformers"
    settings_class = TransformersSettings
    settings: TransformersSettings

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__(settings)
        self._handle: ModelHandle | None = None
        self._tokenizer: Any = None
        self._adapters: dict[str, str] = {}  # name -> path
        self._leaving: set[str] = set()  # being unloaded: no new rows may use them
        self._scheduler: Scheduler | None = None

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
            check_adapter_folder(str(path))
            self._attach(name, str(path))
        self._choose_default()
        max_rows = self.settings.effective_max_batch
        engine = Engine(self._handle, max_rows, self.settings.max_kv_tokens or max_rows * self.context_length)
        self._scheduler = Scheduler(
            engine,
            policy=Policy(self.settings.llm_scheduler),
            max_queue=self.settings.max_queue,
            join_wait_ms=self.settings.llm_join_wait_ms,
            admissible=lambda name: name == PEFT_BASE or (name in self._adapters and name not in self._leaving),
        )

    @property
    def handle(self) -> ModelHandle:
        """The loaded model as the decode loop sees it (benchmarks time engine steps on it directly)."""
        if self._handle is None:
            raise Unavailable("llm is not loaded")
        return self._handle

    def _unload(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
        self._handle = None

    async def close(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.close()

    def describe(self) -> str:
        return f"transformers({self.model_name}, adapters={sorted(self._adapters)}, {self.settings.llm_scheduler})"

    @property
    def _running(self) -> Scheduler:
        self.require_ready()  # Unavailable while loading or shutting down
        assert self._scheduler is not None
        return self._scheduler

    # -- adapters (model thread) -------------------------------------------------------------------
    def _attach(self, name: str, path: str) -> None:
        from peft import PeftModel

        h = self._handle
        assert h is not None
        enable_adapter_layers(h)  # as peft expects them when adapters change
        try:
            if h.uses_peft:
                h.model.load_adapter(path, adapter_name=name)
            else:
                h.model = PeftModel.from_pretrained(h.model, path, adapter_name=name).eval()
                h.uses_peft = True
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            raise InvalidArgument(f"adapter {name!r} at {path!r} does not fit this model: {exc}") from exc
        self._adapters[name] = path
        if uniform_path_exact(h.model, name):
            h.uniform.add(name)

    def _detach(self, name: str) -> None:
        h = self._handle
        assert h is not None
        enable_adapter_layers(h)
        h.uniform.discard(name)
        if len(self._adapters) == 1:
            h.model = h.model.unload()  # back to the plain model: peft keeps no empty wrapper
            h.uses_peft = False
        else:
            if name in h.model.active_adapters:  # move off it first: peft warns when deleting the active one
                h.model.set_adapter(next(n for n in self._adapters if n != name), inference_mode=True)
            h.model.delete_adapter(name)
        del self._adapters[name]

    def _rank(self, name: str) -> int:
        h = self._handle
        config = h.model.peft_config.get(name) if h is not None and h.uses_peft else None
        return int(getattr(config, "r", 0) or 0)

    def adapter_info(self, name: str) -> AdapterInfo:
        return AdapterInfo(name, self._adapters[name], self._rank(name), name == self._default)

    async def load_adapter(self, name: str, path: str, make_default: bool) -> AdapterInfo:
        path = self.check_new_adapter(name, path)
        await self._running.call(lambda: self._attach(name, path))
        if make_default:
            self._default = name
        return self.adapter_info(name)

    async def unload_adapter(self, name: str) -> None:
        self.check_unloadable(name)
        scheduler = self._running
        self._leaving.add(name)  # waiting requests for it fail (NotFound); running rows finish first
        try:
            await scheduler.call(lambda: self._detach(name), due=lambda: not scheduler.engine.uses_adapter(name))
        finally:
            self._leaving.discard(name)

    @property
    def loaded_adapters(self) -> Collection[str]:
        return self._adapters.keys()

    # -- generation --------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        prompt = self.prepare(request)
        adapter = self.resolve_adapter(request.adapter) or PEFT_BASE
        # The model thread hands this loop a step's deltas together (engine.Outbox); they land in
        # ``events`` in order, and then the end (None), queued once ``done`` has its outcome.
        events: asyncio.Queue[Delta | None] = asyncio.Queue()
        job = Job(prompt, request.sampling, adapter, events.put_nowait, loop=asyncio.get_running_loop())
        done = self._running.submit(job)
        done.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (delta := await events.get()) is not None:
                yield delta
            yield done.result()
        finally:
            job.cancelled.set()  # stops the row at the next decode step; frees its batch slot
            done.cancel()
