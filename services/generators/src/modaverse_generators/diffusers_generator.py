"""A generator over one diffusers pipeline: loading, the wait queue, batching, progress, cancellation.

Requests wait in the runtime's :class:`~modaverse_runtime.batching.MicroBatcher` (bounded,
keyed by what must be equal within one pipeline call); its worker runs each batch as one
pipeline call on a dedicated model thread (so the event loop, health checks and Info stay
responsive). Every row has its own seeded ``torch.Generator`` (on the CPU, so a seed gives the
same noise on any device), which makes a row's output independent of what it was batched
with. The pipeline's step callback streams Progress to every request in the batch and aborts
the call at the next step once all of its requests are gone (client cancel, deadline, shutdown).
Where the pipeline and its scheduler allow it (:mod:`.row_drop`), a request that leaves a batch
that goes on has its row dropped at the next step, and the other rows compute what they would have.
An out-of-memory call fails its requests with ResourceExhausted and its memory is released (the
runtime's batcher).

A kind (image, video, audio) is a small subclass: its parameters (a :class:`KindSpec`, which
drives validation, Info, the batch key and the pipeline call), anything else it adds to the
call, and how one output row is encoded.
"""

from __future__ import annotations

import abc
import asyncio
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

from modaverse_runtime.batching import Batch, MicroBatcher
from modaverse_runtime.devices import resolve_device, resolve_dtype
from modaverse_runtime.errors import FailedPrecondition, InvalidArgument, Unavailable
from modaverse_runtime.media import MediaLimits

from .artifacts import resolve_model
from .base import (
    GeneratedMedia,
    GenerationEvent,
    GenerationParams,
    GenerationRequest,
    Generator,
    GeneratorInfo,
    Progress,
)
from .imports import diffusers
from .inputs import decode_input_image
from .params import KindSpec, ParamSpec, resolve_params
from .row_drop import RowDropper, tensor_inputs
from .settings import GeneratorSettings

log = logging.getLogger(__name__)


# Settings named otherwise than their parameter (MODAVERSE_DEFAULT_DURATION_S sets duration_seconds).
_SETTING_NAMES = {"duration_seconds": "duration_s"}


class _Interrupted(Exception):
    """Raised from the step callback to stop a pipeline call nobody waits for any more."""


@dataclass
class GeneratorStats:
    """Counters for tests, benchmarks and logs."""

    batches: int = 0
    rows: int = 0
    steps: int = 0  # denoising steps actually run, over all batches
    interrupted: int = 0
    dropped_rows: int = 0  # rows of gone requests dropped from a call that went on
    batch_sizes: list[int] = field(default_factory=list)


class DiffusersGenerator(Generator):
    spec: ClassVar[KindSpec]
    kind: ClassVar[str]
    release_model: ClassVar[str]
    default_scheduler: ClassVar[str | None] = None  # the scheduler the release swaps in, if any
    # What the pipeline's __call__ must accept beyond the arguments of the kind's parameters.
    call_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: GeneratorSettings) -> None:
        super().__init__(settings)
        self.model = settings.generator_model or ""
        self.deployed = self._deployed_spec()  # the kind's spec with this deployment's defaults and maxima
        self._input_limits = MediaLimits(max_bytes=settings.max_message_bytes)
        self.stats = GeneratorStats()
        self.pipe: Any = None
        self._device = torch.device("cpu")
        self._dtype = torch.float32
        self._new_style_callback = False
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.kind}-model")
        batching = settings.batching
        self._batcher: MicroBatcher[GenerationParams, Any] = MicroBatcher(
            self.kind,
            self._run_batch,
            executor=self._model_thread,
            max_items=settings.batch_max_items if batching else 1,
            max_wait_ms=settings.batch_max_wait_ms if batching else 0.0,
            max_queue=settings.max_queue,
            key=GenerationParams.batch_key,
            wait_unannounced=True,  # a generation takes seconds: a few ms of waiting for company is cheap
            oom_hint="retry with a smaller size, fewer frames or a shorter duration",
        )

    def describe(self) -> str:
        return f"{self.kind} ({self.model or 'not loaded'})"

    @property
    def queued(self) -> int:
        """Requests waiting beyond the running batch."""
        return self._batcher.queued

    @property
    def param_specs(self) -> dict[str, ParamSpec]:
        return self.deployed.by_name()

    # --- configuration ------------------------------------------------------------------
    def _deployed_spec(self) -> KindSpec:
        """Each parameter for the profile, with the settings' ``default_<name>`` / ``max_<name>`` where set."""
        deployed = []
        for param in self.spec.for_profile(self.settings.profile).params:
            setting = _SETTING_NAMES.get(param.name, param.name)
            default = getattr(self.settings, f"default_{setting}", None)
            maximum = getattr(self.settings, f"max_{setting}", None)
            if default is not None:
                param = dataclasses.replace(param, default=default)
            if maximum is not None:
                param = dataclasses.replace(param, maximum=maximum)
            if param.default is not None:
                if param.default > param.maximum:
                    raise FailedPrecondition(f"default_{setting} {param.default} is above max_{setting}")
                try:
                    param.check(param.default)
                except InvalidArgument as exc:
                    raise FailedPrecondition(f"default_{setting}: {exc.message}") from None
            deployed.append(param)
        return dataclasses.replace(self.spec, params=tuple(deployed))

    # --- lifecycle ----------------------------------------------------------------------
    def load_pipeline(self, path: str, dtype: torch.dtype) -> Any:
        return diffusers().DiffusionPipeline.from_pretrained(path, dtype=dtype)

    def _load(self) -> None:
        self.model = resolve_model(self.settings, self.kind, self.release_model)
        self._device = resolve_device(self.settings.device)
        self._dtype = resolve_dtype(self.settings.dtype, self._device)
        if self._device.type == "cpu" and self._dtype == torch.float16:
            raise FailedPrecondition("float16 generation needs a GPU; use dtype auto or float32 on CPU")
        pipe = self.load_pipeline(self.model, self._dtype)
        accepted = set(inspect.signature(pipe.__call__).parameters)
        always = {p.argument for p in self.deployed.params if p.passed and p.default is not None}
        missing = (always | self.call_params) - accepted
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
        await self._batcher.close()  # waiting requests fail; a running call stops at its next step

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
            params=self.deployed.params,
            options=self.deployed.options,
            max_prompt_chars=s.max_prompt_chars,
            takes_image=self.spec.input_image,
            queue_capacity=s.max_queue,
            max_batch_size=self._batcher.max_items,
            profile=s.profile,
            device=str(self._device),
        )

    # --- the kind's part ----------------------------------------------------------------
    def call_kwargs(self, batch: Sequence[GenerationParams]) -> dict[str, Any]:
        """Pipeline-call arguments beyond prompts, seeds and the parameters' own (none by default)."""
        return {}

    def check(self, params: GenerationParams) -> None:
        """Checks across parameters, after each was checked on its own (InvalidArgument)."""

    @abc.abstractmethod
    def rows(self, output: Any) -> Sequence[Any]:
        """The pipeline output split into one array per batch row (CPU numpy)."""

    @abc.abstractmethod
    def encode(self, row: Any, params: GenerationParams) -> GeneratedMedia:
        """One row → the encoded file (seed and timings are filled in by the caller)."""

    # --- serving ------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        self.require_ready()
        params = resolve_params(request, self.deployed, self.settings.max_prompt_chars, self.kind)
        if request.image is not None:
            image = await asyncio.to_thread(decode_input_image, request.image, self._input_limits)
            params = dataclasses.replace(params, image=image)
        self.check(params)
        job = self._batcher.enqueue(params)
        try:
            async for event in job:
                if isinstance(event, Progress):
                    yield event
            row = await job.result()
            media = await asyncio.to_thread(self.encode, row, params)
            yield dataclasses.replace(
                media,
                seed=params.seed,
                queue_s=job.started - job.enqueued,
                elapsed_s=time.perf_counter() - job.started,
            )
        finally:
            job.cancel()  # client gone, deadline passed or done: leave the queue, let a running call stop early

    def _step_callback(self, batch: Batch[GenerationParams], rows: RowDropper | None) -> dict[str, Any]:
        """The pipeline-call arguments of the step callback: progress, abandoning, and with ``rows`` dropping
        the rows of gone requests."""
        pipe = self.pipe
        order = max(1, int(getattr(pipe.scheduler, "order", 1)))

        def on_step(index: int) -> None:
            self.stats.steps += 1
            if batch.abandoned:
                raise _Interrupted
            # What this call runs: the pipeline's own count where it keeps one (an image-to-image call runs
            # only the last `strength` of the schedule), else the schedule's length.
            timesteps = getattr(pipe, "num_timesteps", None) or len(pipe.scheduler.timesteps)
            total = timesteps if self._new_style_callback else math.ceil(timesteps / order)
            batch.report(Progress(step=index + 1, total_steps=total))

        if self._new_style_callback:

            def on_step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                on_step(index)
                if rows is None:
                    return tensors
                live = len(rows.live)
                tensors = rows.drop(batch.gone, tensors)
                self.stats.dropped_rows += live - len(rows.live)
                return tensors

            if rows is None:
                return {"callback_on_step_end": on_step_end}
            names = tensor_inputs(pipe) or ()
            return {"callback_on_step_end": on_step_end, "callback_on_step_end_tensor_inputs": list(names)}

        def legacy(index: int, _timestep: Any, _latents: Any) -> None:
            on_step(index)

        return {"callback": legacy, "callback_steps": 1}

    def _run_batch(self, batch: Batch[GenerationParams]) -> Sequence[Any]:
        """On the model thread: one pipeline call for the whole batch (None for rows dropped on the way)."""
        try:
            if batch.abandoned:
                raise _Interrupted
            return self._call_pipeline(batch)
        except _Interrupted:
            self.stats.interrupted += 1
            raise Unavailable("generation was stopped") from None  # normally nobody listens any more

    def _call_pipeline(self, batch: Batch[GenerationParams]) -> Sequence[Any]:
        first = batch[0]  # the batched parameters are equal in every row (the batch key)
        negatives = [params.negative_prompt for params in batch]
        arguments = {
            p.argument: first.values[p.name] for p in self.deployed.params if p.passed and p.name in first.values
        }
        generators = [torch.Generator("cpu").manual_seed(params.seed) for params in batch]
        # A lone row has nobody to go on without it: leaving abandons the call.
        droppable = len(batch) > 1 and self._new_style_callback and tensor_inputs(self.pipe) is not None
        rows = RowDropper(self.pipe, generators) if droppable else None
        with torch.inference_mode():
            output = self.pipe(
                prompt=[params.prompt for params in batch],
                negative_prompt=negatives if any(negatives) else None,
                generator=generators,
                output_type="np",
                **arguments,
                **self.call_kwargs(batch),
                **self._step_callback(batch, rows),
            )
        self.stats.batches += 1
        self.stats.rows += len(batch)
        self.stats.batch_sizes.append(len(batch))
        outputs = self.rows(output)
        if rows is not None:
            return rows.results(outputs, len(batch))
        if len(outputs) != len(batch):
            raise RuntimeError(f"{type(self.pipe).__name__} returned {len(outputs)} outputs for {len(batch)} prompts")
        return outputs
