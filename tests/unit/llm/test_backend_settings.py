"""Each backend owns its settings: shared fields in LLMSettings, its own in its subclass, the same
MODAVERSE_* names as before the split (the chart and docs use them)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from modaverse_llm.base import LLM_BACKENDS, LLMBackend
from modaverse_llm.service import load_settings, make_backend, settings_class
from modaverse_llm.settings import LLMSettings
from modaverse_llm.transformers_backend import TransformersBackend, TransformersSettings
from modaverse_llm.vllm_backend import VLLMBackend, VLLMSettings
from modaverse_runtime.errors import FailedPrecondition
from modaverse_runtime.settings import ServerSettings

TRANSFORMERS_ONLY = {"torch_threads", "llm_scheduler", "llm_join_wait_ms", "max_kv_tokens"}
VLLM_ONLY = {"vllm_gpu_memory_utilization", "vllm_max_lora_rank", "vllm_max_loras", "vllm_cpu_serialize"}
# Every variable the LLM service reads (before the split all were fields of one LLMSettings; later
# ones are in their backend's set above).
SERVICE_FIELDS = {
    *ServerSettings.model_fields,
    *TRANSFORMERS_ONLY,
    *VLLM_ONLY,
    "llm_impl",
    "base_model",
    "adapters",
    "default_adapter",
    "dtype",
    "context_length",
    "batching",
    "max_batch_size",
    "max_queue",  # transformers only before the vLLM backend had a bounded queue too
    "max_tokens_cap",
    "max_stop_strings",
    "max_stop_chars",
    "max_messages",
    "adapter_root",  # LoadAdapter confined to a folder (issue 17)
    "max_media_rows",
    "allow_runtime_adapters",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MODAVERSE_")]:
        monkeypatch.delenv(key)


def test_the_variables_keep_their_names_and_each_backend_has_only_its_own() -> None:
    shared = set(LLMSettings.model_fields)
    assert not shared & (TRANSFORMERS_ONLY | VLLM_ONLY)
    assert set(TransformersSettings.model_fields) == shared | TRANSFORMERS_ONLY
    assert set(VLLMSettings.model_fields) == shared | VLLM_ONLY
    assert shared | TRANSFORMERS_ONLY | VLLM_ONLY == SERVICE_FIELDS


def test_each_backend_reads_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAVERSE_VLLM_GPU_MEMORY_UTILIZATION", "0.85")  # as values-full-gpu.yaml sets it
    monkeypatch.setenv("MODAVERSE_VLLM_CPU_SERIALIZE", "false")
    monkeypatch.setenv("MODAVERSE_TORCH_THREADS", "3")
    monkeypatch.setenv("MODAVERSE_LLM_SCHEDULER", "static")
    monkeypatch.setenv("MODAVERSE_MAX_TOKENS_CAP", "99")
    vllm, transformers = VLLMSettings(), TransformersSettings()
    assert (vllm.vllm_gpu_memory_utilization, vllm.vllm_cpu_serialize, vllm.max_tokens_cap) == (0.85, False, 99)
    assert (transformers.torch_threads, transformers.llm_scheduler, transformers.max_tokens_cap) == (3, "static", 99)


def test_a_field_given_to_the_wrong_class_is_refused() -> None:
    """Unknown variables in the environment are ignored; a keyword would be dropped just as silently."""
    with pytest.raises(TypeError, match="torch_threads"):
        LLMSettings(torch_threads=1)
    with pytest.raises(TypeError, match="vllm_max_loras"):
        TransformersSettings(vllm_max_loras=2)
    assert VLLMSettings(vllm_max_loras=2).vllm_max_loras == 2


def test_for_backend_keeps_the_given_values_and_reads_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAVERSE_PORT", "1")
    monkeypatch.setenv("MODAVERSE_VLLM_MAX_LORAS", "2")
    shared = LLMSettings(port=7, max_tokens_cap=5, adapters={"a": Path("/x")})  # as CLI flags over the env
    own = shared.for_backend(VLLMSettings)
    assert isinstance(own, VLLMSettings)
    assert (own.port, own.max_tokens_cap, own.adapters, own.vllm_max_loras) == (7, 5, {"a": Path("/x")}, 2)
    assert own.for_backend(VLLMSettings) is own
    # From another backend's settings: only the shared values go across.
    assert TransformersSettings(torch_threads=2, port=8).for_backend(VLLMSettings).port == 8


@pytest.mark.parametrize(
    ("impl", "backend_cls", "own"),
    [("transformers", TransformersBackend, TransformersSettings), ("vllm", VLLMBackend, VLLMSettings)],
)
def test_the_service_gives_each_backend_its_settings(
    monkeypatch: pytest.MonkeyPatch, impl: str, backend_cls: type[LLMBackend], own: type[LLMSettings]
) -> None:
    monkeypatch.setenv("MODAVERSE_LLM_IMPL", impl)
    assert settings_class(impl) is own and LLM_BACKENDS.resolve(impl) is backend_cls
    assert type(load_settings()) is own
    backend = make_backend(LLMSettings(max_messages=3))  # what the CLI builds: shared fields and flags
    try:
        assert isinstance(backend, backend_cls) and type(backend.settings) is own
        assert backend.settings.max_messages == 3
    finally:
        backend.unload()


def test_load_settings_follows_llm_impl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAVERSE_LLM_IMPL", "vllm")
    assert isinstance(load_settings(vllm_max_loras=3), VLLMSettings)
    with pytest.raises(TypeError, match="max_kv_tokens"):
        load_settings(max_kv_tokens=100)  # a transformers field, but vLLM was chosen
    transformers = load_settings(llm_impl="transformers", max_kv_tokens=100)  # the keyword wins
    assert isinstance(transformers, TransformersSettings) and transformers.max_kv_tokens == 100


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_fails_before_building_anything(tmp_path: Path) -> None:
    backend = VLLMBackend(LLMSettings(model_dir=tmp_path))
    with pytest.raises(FailedPrecondition, match="make vllm-venv"):
        backend.load()
    assert not any(tmp_path.iterdir())
