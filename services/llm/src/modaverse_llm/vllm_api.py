"""The slice of vLLM's API that the vLLM backend uses, typed.

vLLM is optional (its own virtualenv, ``make vllm-venv``), so the type checker never sees it. The
Protocols below describe the objects the backend calls and reads, as in vLLM 0.32; the functions
below them are the only places that import vLLM, and each returns one of these types.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Protocol, TypedDict

import torch

from modaverse_runtime.errors import FailedPrecondition


class Logprob(Protocol):
    """``vllm.logprobs.Logprob``: one candidate token at one position."""

    @property
    def logprob(self) -> float: ...

    @property
    def rank(self) -> int | None: ...  # 1 = the most likely token


class CompletionOutput(Protocol):
    """``vllm.outputs.CompletionOutput``; with DELTA output, only what is new since the last one."""

    @property
    def text(self) -> str: ...

    @property
    def token_ids(self) -> Sequence[int]: ...

    @property
    def logprobs(self) -> Sequence[Mapping[int, Logprob]] | None: ...  # per token: candidate id -> Logprob

    @property
    def finish_reason(self) -> str | None: ...  # "stop", "length", "abort"; None while running


class RequestOutput(Protocol):
    """``vllm.outputs.RequestOutput``: one per step of a request."""

    @property
    def outputs(self) -> Sequence[CompletionOutput]: ...


class LoRARequest(Protocol):
    """``vllm.lora.request.LoRARequest``: an adapter by name, id (unique per engine) and folder."""

    @property
    def lora_name(self) -> str: ...

    @property
    def lora_int_id(self) -> int: ...

    @property
    def lora_path(self) -> str: ...


class SamplingParams(Protocol):
    """``vllm.SamplingParams``; only built here and handed to ``generate``."""

    @property
    def max_tokens(self) -> int | None: ...

    @property
    def logprobs(self) -> int | None: ...


class EmbedsPrompt(TypedDict):
    """``vllm.inputs.EmbedsPrompt`` as the backend sends it: one row per prompt position."""

    prompt_embeds: torch.Tensor


class EngineOptions(TypedDict):
    """The ``vllm.AsyncEngineArgs`` the backend sets."""

    model: str
    dtype: str
    max_model_len: int
    enable_prompt_embeds: bool
    enable_lora: bool
    max_lora_rank: int
    max_loras: int
    gpu_memory_utilization: float
    max_num_seqs: int
    seed: int


class AsyncEngine(Protocol):
    """``vllm.v1.engine.async_llm.AsyncLLM``."""

    def generate(
        self,
        prompt: EmbedsPrompt,
        sampling_params: SamplingParams,
        request_id: str,
        *,
        lora_request: LoRARequest | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Closing the generator aborts the request."""

    async def add_lora(self, lora_request: LoRARequest) -> bool: ...

    async def remove_lora(self, lora_id: int) -> bool: ...

    def shutdown(self) -> None: ...


def ensure_installed() -> None:
    """Fail early and clearly where vLLM is missing (the main virtualenv)."""
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise FailedPrecondition("MODAVERSE_LLM_IMPL=vllm needs vLLM installed (make vllm-venv on CPU)") from exc


def start_engine(options: EngineOptions) -> AsyncEngine:
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine: AsyncEngine = AsyncLLM.from_engine_args(AsyncEngineArgs(**options))
    return engine


def lora_request(name: str, lora_id: int, path: str) -> LoRARequest:
    from vllm.lora.request import LoRARequest as VLLMLoRARequest

    request: LoRARequest = VLLMLoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=path)
    return request


def delta_sampling_params(
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int | None,
    stop: list[str],
    repetition_penalty: float,
    logprobs: int | None,
) -> SamplingParams:
    """vLLM's sampling parameters with DELTA output: each RequestOutput carries only the new tokens and
    text. ``top_k`` -1 = off; ``logprobs``: alternatives per token besides the sampled one, None = none."""
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.sampling_params import RequestOutputKind

    params: SamplingParams = VLLMSamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        stop=stop,
        repetition_penalty=repetition_penalty,
        output_kind=RequestOutputKind.DELTA,
        logprobs=logprobs,
    )
    return params
