"""Adapter resolution and validation: one implementation in LLMBackend, used by both backends."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import grpc
import pytest

from modaverse_llm.base import LLMBackend, PermissionDenied, check_adapter_folder
from modaverse_llm.settings import LLMSettings
from modaverse_llm.transformers_backend import TransformersBackend
from modaverse_llm.types import AdapterInfo, Completion, Event, FinishReason, GenerationRequest
from modaverse_llm.vllm_backend import VLLMBackend
from modaverse_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable


class Bookkeeping(LLMBackend):
    """A backend with adapters by name and no model: what LLMBackend decides on its own."""

    name = "bookkeeping"

    def __init__(self, settings: LLMSettings, adapters: dict[str, str]) -> None:
        super().__init__(settings)
        self._adapters = adapters

    def _load(self) -> None:
        self._choose_default()

    @property
    def loaded_adapters(self) -> Collection[str]:
        return self._adapters.keys()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        yield Completion("", 0, 0, FinishReason.STOP, 0)

    def adapter_info(self, name: str) -> AdapterInfo:
        return AdapterInfo(name, self._adapters[name], 0, name == self._default)

    async def load_adapter(self, name: str, path: str, make_default: bool) -> AdapterInfo:
        self._adapters[name] = self.check_new_adapter(name, path)
        return self.adapter_info(name)

    async def unload_adapter(self, name: str) -> None:
        self.check_unloadable(name)
        del self._adapters[name]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MODAVERSE_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def peft_folder(tmp_path: Path) -> str:
    (tmp_path / "adapter_config.json").write_text('{"r": 8}')
    return str(tmp_path)


def loaded(default: str = "default", **settings: object) -> Bookkeeping:
    backend = Bookkeeping(LLMSettings(default_adapter=default, **settings), {"default": "/a", "second": "/b"})
    backend.load()
    return backend


def test_both_backends_use_the_one_implementation() -> None:
    for backend in (TransformersBackend, VLLMBackend):
        for method in ("resolve_adapter", "check_new_adapter", "check_unloadable", "_choose_default"):
            assert getattr(backend, method) is getattr(LLMBackend, method), (backend.__name__, method)


def test_a_request_runs_its_adapter_else_the_default() -> None:
    backend = loaded()
    assert backend.resolve_adapter("") == "default"
    assert backend.resolve_adapter("second") == "second"
    assert backend.resolve_adapter("base") is None  # "base": no adapter
    with pytest.raises(NotFound, match="'nope' is not loaded"):
        backend.resolve_adapter("nope")
    assert loaded(default="base").resolve_adapter("") is None
    missing = loaded(default="elsewhere")  # a default that is not loaded means none
    assert missing.resolve_adapter("") is None and not missing.info().adapters[0].is_default


def test_a_new_adapter_needs_a_free_valid_name_and_a_peft_folder(peft_folder: str) -> None:
    backend = loaded()
    for name in ("", "base", "__base__", "x" * 129):
        with pytest.raises(InvalidArgument, match="reserved or invalid"):
            backend.check_new_adapter(name, peft_folder)
    with pytest.raises(AlreadyExists):
        backend.check_new_adapter("second", peft_folder)
    with pytest.raises(InvalidArgument, match="path is empty"):
        backend.check_new_adapter("third", "")
    with pytest.raises(InvalidArgument, match=r"no adapter_config\.json"):
        backend.check_new_adapter("third", str(Path(peft_folder) / "absent"))
    backend.check_new_adapter("third", peft_folder)


def test_run_time_changes_need_a_ready_backend_that_allows_them(peft_folder: str) -> None:
    with pytest.raises(Unavailable):
        Bookkeeping(LLMSettings(), {}).check_new_adapter("third", peft_folder)
    closed = loaded(allow_runtime_adapters=False)
    with pytest.raises(FailedPrecondition, match="MODAVERSE_ALLOW_RUNTIME_ADAPTERS"):
        closed.check_new_adapter("third", peft_folder)
    with pytest.raises(FailedPrecondition, match="MODAVERSE_ALLOW_RUNTIME_ADAPTERS"):
        closed.check_unloadable("second")


def test_unloading_needs_a_loaded_adapter_that_is_not_the_default() -> None:
    backend = loaded()
    with pytest.raises(NotFound):
        backend.check_unloadable("nope")
    with pytest.raises(FailedPrecondition, match="is the default"):
        backend.check_unloadable("default")
    backend.check_unloadable("second")


def test_check_adapter_folder(peft_folder: str, tmp_path: Path) -> None:
    check_adapter_folder(peft_folder)
    for bad in ("", str(tmp_path / "nowhere"), str(tmp_path / "adapter_config.json")):
        with pytest.raises(InvalidArgument):
            check_adapter_folder(bad)


# MODAVERSE_ADAPTER_ROOT --------------------------------------------------------------------------------------


@pytest.fixture
def adapter_tree(tmp_path: Path) -> dict[str, Path]:
    """An adapter root with one peft folder in it, one beside it, and links from inside the root to both."""
    root, outside = tmp_path / "adapters", tmp_path / "elsewhere"
    for folder in (root / "mine", outside):
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text('{"r": 8}')
    (root / "escape").symlink_to(outside)
    (root / "alias").symlink_to(root / "mine")
    return {"root": root, "inside": root / "mine", "outside": outside}


def test_load_adapter_reads_only_folders_under_the_adapter_root(adapter_tree: dict[str, Path]) -> None:
    root = adapter_tree["root"]
    backend = loaded(adapter_root=root)
    inside = str(adapter_tree["inside"].resolve())
    assert backend.check_new_adapter("third", str(adapter_tree["inside"])) == inside
    # A link that stays inside: what is loaded is the folder that was checked, not the link (which could
    # be pointed elsewhere between the check and the load).
    assert backend.check_new_adapter("third", str(root / "alias")) == inside
    assert backend.check_new_adapter("third", str(root / "mine" / ".." / "mine")) == inside
    for path in (adapter_tree["outside"], root / "escape", root / ".." / "elsewhere", Path("/")):
        with pytest.raises(PermissionDenied, match=r"outside the adapter root .*MODAVERSE_ADAPTER_ROOT") as info:
            backend.check_new_adapter("third", str(path))
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    # Outside the root nothing is looked at: the answer is the same whether a folder exists there or not.
    with pytest.raises(PermissionDenied):
        backend.check_new_adapter("third", str(adapter_tree["outside"] / "absent"))
    with pytest.raises(InvalidArgument, match=r"no adapter_config\.json"):  # inside: the usual checks
        backend.check_new_adapter("third", str(root / "absent"))


def test_without_an_adapter_root_any_readable_folder_loads(adapter_tree: dict[str, Path]) -> None:
    backend = loaded()
    assert backend.settings.adapter_root is None
    assert backend.check_new_adapter("third", str(adapter_tree["outside"])) == str(adapter_tree["outside"])
    escape = str(adapter_tree["root"] / "escape")
    assert backend.check_new_adapter("third", escape) == escape  # loaded as named, as before the root existed


def test_the_adapter_root_comes_from_the_environment(
    adapter_tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODAVERSE_ADAPTER_ROOT", str(adapter_tree["root"]))
    backend = Bookkeeping(LLMSettings(), {})
    backend.load()
    with pytest.raises(PermissionDenied):
        backend.check_new_adapter("third", str(adapter_tree["outside"]))
