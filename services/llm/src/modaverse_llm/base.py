"""The LLMBackend role: a conversation (text + projected media rows) in, streamed text out."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import ClassVar

import grpc
import torch

from modaverse_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, ModaverseError, NotFound
from modaverse_runtime.models import ModelBase
from modaverse_runtime.registry import Registry

from .prompt import PreparedPrompt, PromptBuilder
from .sampling import validate_sampling
from .settings import LLMSettings
from .types import AdapterInfo, BackendInfo, Event, GenerationRequest

BASE_ADAPTER = "base"  # the request's adapter name meaning "no adapter"
RESERVED_ADAPTER_NAMES = frozenset({BASE_ADAPTER, "__base__"})  # "__base__": peft's own "no adapter"


class PermissionDenied(ModaverseError):
    """A caller with valid credentials asked for something the deployment does not allow it (only the LLM
    raises it, so it lives here rather than in the runtime's shared errors)."""

    code = grpc.StatusCode.PERMISSION_DENIED


def check_adapter_root(path: str, root: Path | None) -> str:
    """Raise PermissionDenied unless ``path``, its symlinks and ``..`` resolved, lies inside ``root`` (None: any).
    Returns the folder to load: with a root, the resolved path that was checked, so a link changed after the
    check cannot lead the load outside.

    LoadAdapter makes the server read whatever folder a caller names; a root keeps callers to the folders
    the operator put there."""
    if root is None:
        return path
    resolved, inside = Path(path).resolve(), root.resolve()
    if not resolved.is_relative_to(inside):
        raise PermissionDenied(
            f"{path!r} is outside the adapter root {str(root)!r} (MODAVERSE_ADAPTER_ROOT): LoadAdapter loads only "
            "folders under it"
        )
    return str(resolved)


def check_adapter_folder(path: str, root: Path | None = None) -> str:
    """Raise unless ``path`` is a peft adapter folder (what both backends load) inside ``root``, when set:
    InvalidArgument, or PermissionDenied outside the root (checked first: a caller learns nothing of what
    exists elsewhere)."""
    if not path:
        raise InvalidArgument("path is empty: give a peft adapter folder readable by the server")
    folder = check_adapter_root(path, root)
    if not (Path(folder) / "adapter_config.json").is_file():
        raise InvalidArgument(f"{path!r} is not a peft adapter folder (no adapter_config.json)")
    return folder


class LLMBackend(ModelBase):
    """Implementations are constructed from settings alone (cheap); ``load`` does the work and
    must set ``builder``, ``model_name``, ``hidden_size``, ``dtype`` and ``context_length``.

    A backend with options of its own declares them in a subclass of ``LLMSettings``, names it in
    ``settings_class`` and narrows ``settings`` to it; the constructor takes any ``LLMSettings``."""

    role = "llm"
    name = "llm"
    settings_class: ClassVar[type[LLMSettings]] = LLMSettings
    settings: LLMSettings

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__()
        self.settings = settings.for_backend(self.settings_class)
        self.builder: PromptBuilder | None = None
        self.model_name = ""
        self.hidden_size = 0
        self.dtype = torch.float32
        self.context_length = 0
        self._default = ""  # the adapter used when a request names none

    # -- adapter bookkeeping shared by the backends --------------------------------------------------
    @property
    @abc.abstractmethod
    def loaded_adapters(self) -> Collection[str]: ...

    def _runtime_admin(self, action: str) -> None:
        self.require_ready()
        if not self.settings.allow_runtime_adapters:
            raise FailedPrecondition(f"{action} adapters at run time is disabled (MODAVERSE_ALLOW_RUNTIME_ADAPTERS)")

    def check_new_adapter(self, name: str, path: str) -> str:
        """Raise unless ``name`` may be loaded from ``path`` now (admin allowed, valid name not
        loaded yet, a peft adapter folder); returns the folder to load (``check_adapter_folder``)."""
        self._runtime_admin("loading")
        if not name or name in RESERVED_ADAPTER_NAMES or len(name) > 128:
            raise InvalidArgument(f"adapter name {name!r} is reserved or invalid")
        if name in self.loaded_adapters:
            raise AlreadyExists(f"adapter {name!r} is already loaded; unload it first")
        return check_adapter_folder(path, self.settings.adapter_root)

    def check_unloadable(self, name: str) -> None:
        """Raise unless ``name`` may be unloaded now (admin allowed, loaded, not the default)."""
        self._runtime_admin("unloading")
        if name not in self.loaded_adapters:
            raise NotFound(f"adapter {name!r} is not loaded; loaded: {sorted(self.loaded_adapters) or 'none'}")
        if name == self._default:
            raise FailedPrecondition(f"adapter {name!r} is the default; load another with make_default first")

    def _choose_default(self) -> None:
        """After the start-up adapters are loaded: MODAVERSE_DEFAULT_ADAPTER if it is one of them."""
        wanted = self.settings.default_adapter
        self._default = wanted if wanted in self.loaded_adapters else ""

    def resolve_adapter(self, requested: str) -> str | None:
        """The loaded adapter a request runs: its own, else the default; None means the base model.
        NotFound for any other name (each backend spells "no adapter" its own way)."""
        name = requested or self._default
        if not name or name == BASE_ADAPTER:
            return None
        if name not in self.loaded_adapters:
            raise NotFound(f"adapter {requested!r} is not loaded; loaded: {sorted(self.loaded_adapters) or 'none'}")
        return name

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

    @property
    def max_batch(self) -> int:
        """Rows decoded together."""
        return self.settings.effective_max_batch

    @abc.abstractmethod
    def adapter_info(self, name: str) -> AdapterInfo:
        """What is known of the loaded adapter ``name``."""

    def info(self) -> BackendInfo:
        self.require_ready()
        return BackendInfo(
            model=self.model_name,
            backend=self.name,
            hidden_size=self.hidden_size,
            dtype=self.dtype,
            context_length=self.context_length,
            adapters=tuple(self.adapter_info(n) for n in sorted(self.loaded_adapters)),
            max_batch_size=self.max_batch,
        )

    @abc.abstractmethod
    async def load_adapter(self, name: str, path: str, make_default: bool) -> AdapterInfo: ...

    @abc.abstractmethod
    async def unload_adapter(self, name: str) -> None: ...


LLM_BACKENDS: Registry[LLMBackend] = Registry("llm backend", LLMBackend)
LLM_BACKENDS.register("transformers", "modaverse_llm.transformers_backend:TransformersBackend")
LLM_BACKENDS.register("vllm", "modaverse_llm.vllm_backend:VLLMBackend")
