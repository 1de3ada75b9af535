"""A generator over one diffusers pipeline: loading, the wait queue, batching, progress, cancellation.

Requests wait in a bounded :class:`BatchQueue`; one worker task takes batches of
compatible requests and runs each as one pipeline call on a dedicated model thread
(so the event loop, health checks and Info stay responsive). Every row has its own
seeded ``torch.Generator`` (on the CPU, so a seed gives the same noise on any device),
which makes a row's output independent of what it was batched with. The pipeline's
step callback streams Progress to every request in the batch and aborts the call at
the next step once all of its requests are gone (client cancel, deadline, shutdown).

A kind (image, video, audio) is a small subclass: its limits, what it adds to the
pipeline call, and how one output row is encoded.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import inspect
import logging
import math
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from modaverse_runtime import metrics
from modaverse_runtime.devices import resolve_device, resolve_dtype
from modaverse_runtime.errors import FailedPrecondition, ResourceExhausted, Unavailable

from .base import (
    GeneratedMedia,
    GenerationEvent,
    GenerationParams,
    GenerationRequest,
    Generator,
    GeneratorInfo,
    Limits,
    Progress,
)
from .batch_queue import BatchQueue
from .imports import diffusers
from .params import KindSpec, resolve_params
from .settings import GeneratorSettings
from .tiny import BUILDERS, ensure_tiny_generator

log = logging.getLogger(__name__)


class _Interrupted(Exception):
    """Raised from the step callback to stop a pipeline call nobody waits for any more."""


@dataclass
class _Finished:
    row: Any = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Job:
    params: GenerationParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Progress | _Finished] = field(default_factory=asyncio.Queue)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    cancelled: bool = False  # set on the loop, read by the model thread (a plain bool is safe to share)

    def send(self, event: Progress | _Finished) -> None:
        """From any thread."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


@dataclass
class GeneratorStats:
    """Counters for tests, benchmarks and logs."""

    batches: int = 0
    rows: int = 0
    steps: int = 0  # denoising steps actually run, over all batches
    interrupted: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class DiffusersGenerator(Generator):
    spec: ClassVar[KindSpec]
    kind: ClassVar[str]
    release_model: ClassVar[str]
    full_limits: ClassVar[Limits]
    tiny_limits: ClassVar[Limits]
    default_scheduler: ClassVar[str | None] = None  # the scheduler the release swaps in, if any
    call_params: ClassVar[frozenset[str]] = frozenset()  # what the pipeline's __call__ must accept

    def __init__(self, settings: GeneratorSettings) -> None:
        super().__init__(settings)
        self.model = settings.generator_model or ""
        self.limits = self._limits()
        self.stats = GeneratorStats()
        self.pipe: Any = None
        self._device = torch.device("cpu")
        self._dtype = torch.float32
        self._new_style_callback = False
        self._closing = False
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.kind}-model")
        batching = settings.batching
        self._queue: BatchQueue[_Job] = BatchQueue(
            self.kind,
            lambda job: job.params.batch_key(),
            capacity=settings.max_queue,
            max_items=settings.batch_max_items if batching else 1,
            max_wait_ms=settings.batch_max_wait_ms if batching else 0.0,
        )
        self._worker: asyncio.Task[None] | None = None

    def describe(self) -> str:
        return f"{self.kind} ({self.model or 'not loaded'})"

    # --- configuration ------------------------------------------------------------------
    def _limits(self) -> Limits:
        base = self.full_limits if self.settings.profile == "full" else self.tiny_limits
        overrides: dict[str, Any] = {"max_prompt_chars": self.settings.max_prompt_chars}
        for f in dataclasses.fields(Limits):
            value = getattr(self.settings, f.name, None)
            if value is not None and f.name != "max_prompt_chars" and getattr(base, f.name):
                overrides[f.name] = value  # only parameters this kind uses (non-zero in its table)
        limits = dataclasses.replace(base, **overrides)
        for default, maximum in (
            ("default_steps", "max_steps"),
            ("default_width", "max_width"),
            ("default_height", "max_height"),
            ("default_num_frames", "max_num_frames"),
            ("default_duration_s", "max_duration_s"),
        ):
            if getattr(limits, default) > getattr(limits, maximum):
                raise FailedPrecondition(f"{default} {getattr(limits, default)} is above {maximum}")
        return limits

    def _model_path(self) -> str:
        if self.settings.generator_model:
            return self.settings.generator_model
        if self.settings.profile == "full":
            return self.release_model
        if self.kind not in BUILDERS:
            raise FailedPrecondition(f"no tiny build for {self.kind}; set MODAVERSE_GENERATOR_MODEL")
        return str(ensure_tiny_generator(self.settings.model_dir, self.kind))

    # --- lifecycle ----------------------------------------------------------------------
    def load_pipeline(self, path: str, dtype: torch.dtype) -> Any:
        return diffusers().DiffusionPipeline.from_pretrained(path, dtype=dtype)

    def _load(self) -> None:
        self.model = self._model_path()
        self._device = resolve_device(self.settings.device)
        self._dtype = resolve_dtype(self.settings.dtype, self._device)
        if self._device.type == "cpu" and self._dtype == torch.float16:
            raise FailedPrecondition("float16 generation needs a GPU; use dtype auto or float32 on CPU")
        pipe = self.load_pipeline(self.model, self._dtype)
        accepted = set(inspect.signature(pipe.__call__).parameters)
        missing = self.call_params - accepted
        if missing:
            raise FailedPrecondition(
                f"{type(pipe).__name__} from {self.model} is not a {self.kind} pipeline "
                f"(its call takes no {', '.join(sorted(missing))})"
            )
        self._new_style_callback = "callback_on_step_end" in accepted
        scheduler = self.settings.scheduler or self.default_scheduler
        if scheduler and type(pipe.scheduler).__name__ != scheduler:
            cls = getattr(diffusers(), scheduler, None)
            if cls is None:
                raise FailedPrecondition(f"unknown diffusers scheduler {scheduler!r}")
            pipe.scheduler = cls.from_config(pipe.scheduler.config)
        if self.settings.cpu_offload and self._device.type == "cuda":
            pipe.enable_model_cpu_offload(device=self._device)
        else:
            pipe.to(self._device)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe

    async def close(self) -> None:
        self._closing = True  # running calls stop at their next step
        for job in self._queue.close():
            job.send(_Finished(error=Unavailable(f"{self.kind} generator is shutting down")))
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _unload(self) -> None:
        self.pipe = None
        self._model_thread.shutdown(wait=False, cancel_futures=True)
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def info(self) -> GeneratorInfo:
        self.require_ready()
        s = self.settings
        return GeneratorInfo(
            modality=self.spec.modality,
            kind=self.kind,
            model=self.model,
            mime_types=self.spec.mime_types,
            limits=self.limits,
            options=tuple(sorted(self.spec.options)),
            queue_capacity=s.max_queue,
            max_batch_size=self._queue.max_items,
            profile=s.profile,
            device=str(self._device),
        )

    # --- the kind's part ----------------------------------------------------------------
    @abc.abstractmethod
    def call_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        """Pipeline-call arguments beyond prompts, seeds, steps and guidance (sizes, frames, length)."""

    @abc.abstractmethod
    def rows(self, output: Any) -> Sequence[Any]:
        """The pipeline output split into one array per batch row (CPU numpy)."""

    @abc.abstractmethod
    def encode(self, row: Any, params: GenerationParams) -> GeneratedMedia:
        """One row → the encoded file (seed and timings are filled in by the caller)."""

    # --- serving ------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        self.require_ready()
        params = resolve_params(request, self.spec, self.limits)
        job = _Job(params, asyncio.get_running_loop())
        self._queue.put(job)
        metrics.QUEUE_DEPTH.labels(self.kind).set(len(self._queue))
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"{self.kind}-worker")
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, Progress):
                    yield event
                    continue
                if event.error is not None:
                    raise event.error
                media = await asyncio.to_thread(self.encode, event.row, params)
                yield dataclasses.replace(
                    media,
                    seed=params.seed,
                    queue_s=job.started - job.enqueued,
                    elapsed_s=time.perf_counter() - job.started,
                )
                return
        finally:
            # Client gone, deadline passed or done: leave the queue, and let a running call stop early.
            job.cancelled = True
            if self._queue.discard(job):
                metrics.QUEUE_DEPTH.labels(self.kind).set(len(self._queue))

    async def _work(self) -> None:
        while True:
            batch = [job for job in await self._queue.next_batch() if not job.cancelled]
            try:
                await self._run(batch)
            except Exception:  # a bug here must not stop the worker: every later request would hang
                log.exception("%s worker failed on a batch of %d", self.kind, len(batch))
                for job in batch:
                    job.events.put_nowait(_Finished(error=RuntimeError("generation failed")))

    async def _run(self, batch: list[_Job]) -> None:
        metrics.QUEUE_DEPTH.labels(self.kind).set(len(self._queue))
        if not batch:
            return
        started = time.perf_counter()
        for job in batch:
            job.started = started
        metrics.BATCH_SIZE.labels(self.kind).observe(len(batch))
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self._model_thread, self._run_batch, batch)
        except _Interrupted:
            self.stats.interrupted += 1
            for job in batch:  # normally nobody listens any more; shutdown tells those who do
                job.events.put_nowait(_Finished(error=Unavailable("generation was stopped")))
            return
        except Exception as exc:
            error = _domain_error(exc)
            for job in batch:
                job.events.put_nowait(_Finished(error=error))
            return
        for job, row in zip(batch, rows, strict=True):
            job.events.put_nowait(_Finished(row=row))

    def _step_callback(self, batch: Sequence[_Job]) -> dict[str, Any]:
        pipe = self.pipe
        order = max(1, int(getattr(pipe.scheduler, "order", 1)))

        def on_step(index: int) -> None:
            self.stats.steps += 1
            if self._closing or all(job.cancelled for job in batch):
                raise _Interrupted
            timesteps = len(pipe.scheduler.timesteps)
            total = timesteps if self._new_style_callback else math.ceil(timesteps / order)
            for job in batch:
                if not job.cancelled:
                    job.send(Progress(step=index + 1, total_steps=total))

        if self._new_style_callback:

            def on_step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                on_step(index)
                return tensors

            return {"callback_on_step_end": on_step_end}

        def legacy(index: int, _timestep: Any, _latents: Any) -> None:
            on_step(index)

        return {"callback": legacy, "callback_steps": 1}

    def _run_batch(self, batch: Sequence[_Job]) -> Sequence[Any]:
        """On the model thread: one pipeline call for the whole batch."""
        if self._closing or all(job.cancelled for job in batch):
            raise _Interrupted
        first = batch[0].params
        negatives = [job.params.negative_prompt for job in batch]
        options = {key: int(v) if self.spec.options[key].integer else v for key, v in first.options}
        with torch.inference_mode():
            output = self.pipe(
                prompt=[job.params.prompt for job in batch],
                negative_prompt=negatives if any(negatives) else None,
                generator=[torch.Generator("cpu").manual_seed(job.params.seed) for job in batch],
                num_inference_steps=first.steps,
                guidance_scale=first.guidance_scale,
                output_type="np",
                **self.call_kwargs(first),
                **options,
                **self._step_callback(batch),
            )
        self.stats.batches += 1
        self.stats.rows += len(batch)
        self.stats.batch_sizes.append(len(batch))
        rows = self.rows(output)
        if len(rows) != len(batch):
            raise RuntimeError(f"{type(self.pipe).__name__} returned {len(rows)} outputs for {len(batch)} prompts")
        return rows


def _domain_error(exc: Exception) -> Exception:
    if isinstance(exc, torch.OutOfMemoryError):
        return ResourceExhausted("out of GPU memory; retry with a smaller size, fewer frames or a shorter duration")
    return exc
