"""The LLMBackend role: a conversation (text + projected media rows) in, streamed text out."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

import torch

from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.models import ModelBase
from modaverse_runtime.registry import Registry

from .prompt import PreparedPrompt, PromptBuilder
from .sampling import validate_sampling
from .settings import LLMSettings
from .types import AdapterInfo, BackendInfo, Event, GenerationRequest

BASE_ADAPTER = "base"  # the request's adapter name meaning "no adapter"


class LLMBackend(ModelBase):
    """Implementations are constructed from settings alone (cheap); ``load`` does the work and
    must set ``builder``, ``hidden_size``, ``dtype`` and ``context_length``."""

    role = "llm"
    name = "llm"

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__()
        self.settings = settings
        self.builder: PromptBuilder | None = None
        self.hidden_size = 0
        self.dtype = torch.float32
        self.context_length = 0

    def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        """Validate the sampling values and build the prompt (raises InvalidArgument)."""
        self.require_ready()
        s = self.settings
        validate_sampling(request.sampling, s.max_tokens_cap, s.max_stop_strings, s.max_stop_chars)
        if len(request.messages) > s.max_messages:
            raise InvalidArgument(f"{len(request.messages)} messages; at most {s.max_messages} are allowed")
        assert self.builder is not None
        return self.builder.build(request.messages, self.context_length, request.sampling.max_tokens)

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Stream Delta events, then exactly one Completion. Unknown adapter: NotFound."""

    @abc.abstractmethod
    def info(self) -> BackendInfo: ...

    @abc.abstractmethod
    async def load_adapter(self, name: str, path: str, make_default: bool) -> AdapterInfo: ...

    @abc.abstractmethod
    async def unload_adapter(self, name: str) -> None: ...


LLM_BACKENDS: Registry[LLMBackend] = Registry("llm backend", LLMBackend)
LLM_BACKENDS.register("transformers", "modaverse_llm.transformers_backend:TransformersBackend")
LLM_BACKENDS.register("vllm", "modaverse_llm.vllm_backend:VLLMBackend")
