"""A model call whose rows all run one adapter (or none) skips peft's mixed-batch path when that gives
the same logits bit for bit (engine._adapter_kwargs): prefill and decode steps through the engine's
KV slabs, against the same steps forced through the mixed path; a batch mixing adapters (or base
and adapter rows) still takes the mixed path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from modaverse_llm.compat import prime_transformers
from modaverse_llm.engine import PEFT_BASE, Engine, Job, ModelHandle, enable_adapter_layers, uniform_path_exact
from modaverse_llm.prompt import PreparedPrompt, PromptBuilder
from modaverse_llm.tokenizer import load_tokenizer
from modaverse_llm.types import Message, Role, SamplingParams

PROMPTS = ["tell me a long story about a red cat", "sing", "draw a dog by the sea please"]


def load(base: Path, adapters: dict[str, Path], dtype: torch.dtype = torch.float32) -> Any:
    prime_transformers()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype).eval()
    (first, path), *rest = adapters.items()
    model = PeftModel.from_pretrained(model, str(path), adapter_name=first).eval()
    for name, path in rest:
        model.load_adapter(str(path), adapter_name=name)
    return model


@pytest.fixture(scope="module")
def handle(llm_model_dir: Path, second_adapter: Path) -> Iterator[ModelHandle]:
    root = llm_model_dir / "tiny" / "llm"
    tokenizer = load_tokenizer(str(root / "base"))
    model = load(root / "base", {"default": root / "adapters" / "default", "second": second_adapter})
    h = ModelHandle(
        model=model,
        embed=model.get_input_embeddings(),
        decode=lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
        eos=set(),  # run every step
        device=torch.device("cpu"),
        dtype=torch.float32,
        context_length=1024,
        uses_peft=True,
    )
    yield h
    enable_adapter_layers(h)


class MixedCalls:
    """Counts peft's mixed-batch forwards (one per LoRA layer and model call)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from peft.tuners.lora.layer import LoraLayer

        self.count = 0
        real = LoraLayer._mixed_batch_forward

        def counted(layer: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(layer, *args, **kwargs)

        monkeypatch.setattr(LoraLayer, "_mixed_batch_forward", counted)


_PROMPTS: dict[str, PreparedPrompt] = {}


@pytest.fixture(scope="module", autouse=True)
def prompts(llm_model_dir: Path) -> None:
    builder = PromptBuilder(load_tokenizer(str(llm_model_dir / "tiny" / "llm" / "base")))
    for text in PROMPTS:
        _PROMPTS[text] = builder.build([Message(Role.USER, (text,))], 1024, 64)


def run(h: ModelHandle, adapters: list[str], steps: int = 6) -> list[torch.Tensor]:
    """Prefill rows running ``adapters`` (row i: prompt i mod 3) and decode ``steps`` greedy steps:
    the logits of every model call."""
    sampling = SamplingParams(max_tokens=steps + 1, temperature=0.0)
    jobs = [
        Job(_PROMPTS[PROMPTS[i % len(PROMPTS)]], sampling, adapter, lambda _delta: None)
        for i, adapter in enumerate(adapters)
    ]
    engine = Engine(h, max_rows=len(jobs), max_kv_tokens=0)
    logits = []
    with torch.inference_mode():
        engine.admit(jobs)
        for _ in range(steps):
            assert engine._logits is not None
            logits.append(engine._logits.clone())
            engine.sample()
            engine.forward()
    return logits


def test_plain_float32_lora_is_exact_and_float32_lora_on_bfloat16_is_not(
    handle: ModelHandle, llm_model_dir: Path
) -> None:
    assert uniform_path_exact(handle.model, "default") and uniform_path_exact(handle.model, "second")
    assert not uniform_path_exact(handle.model, "nope")
    root = llm_model_dir / "tiny" / "llm"
    half = load(root / "base", {"default": root / "adapters" / "default"}, torch.bfloat16)
    lora_a = next(m for m in half.modules() if hasattr(m, "lora_A") and "default" in m.lora_A).lora_A["default"]
    assert lora_a.weight.dtype == torch.float32  # peft's autocast: the paths would round differently
    assert not uniform_path_exact(half, "default")


UNIFORM = [["default"] * 3, ["second"] * 3, [PEFT_BASE] * 3, ["default"] * 3]
MIXED = [["default", PEFT_BASE, "default"], ["second", "default", "second"], [PEFT_BASE, "second", PEFT_BASE]]


def test_uniform_calls_skip_the_mixed_path_with_bit_identical_logits(
    handle: ModelHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle.uniform = set()  # every call through peft's mixed-batch path: the reference
    reference = [run(handle, names) for names in UNIFORM]
    handle.uniform = {"default", "second"}
    mixed = MixedCalls(monkeypatch)
    for names, expected in zip(UNIFORM, reference, strict=True):  # switches adapter, disables, enables again
        got = run(handle, names)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), names
        assert handle.adapters_off == (names[0] == PEFT_BASE)
    assert mixed.count == 0
    # The adapters matter: the comparisons are not between equal outputs by accident.
    assert not torch.equal(reference[0][0], reference[1][0]) and not torch.equal(reference[0][0], reference[2][0])
    # An adapter that is not known to be exact keeps the mixed path, also when every row runs it.
    handle.uniform = {"default"}
    run(handle, ["second"] * 3, steps=1)
    assert mixed.count > 0
    handle.uniform = {"default", "second"}


def test_mixed_batches_keep_the_mixed_path(handle: ModelHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    handle.uniform = set()
    reference = [run(handle, names) for names in MIXED]
    handle.uniform = {"default", "second"}
    run(handle, [PEFT_BASE] * 2, steps=1)  # leaves peft's adapter layers disabled
    assert handle.adapters_off
    mixed = MixedCalls(monkeypatch)
    for names, expected in zip(MIXED, reference, strict=True):
        calls = mixed.count
        got = run(handle, names)
        assert mixed.count > calls and not handle.adapters_off, names
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), names


def test_adapter_layers_are_enabled_again_before_adapters_change(handle: ModelHandle) -> None:
    handle.uniform = {"default", "second"}
    run(handle, [PEFT_BASE], steps=1)
    assert handle.adapters_off
    enable_adapter_layers(handle)
    assert not handle.adapters_off
    from peft.tuners.lora import LoraLayer

    assert not any(m.disable_adapters for m in handle.model.modules() if isinstance(m, LoraLayer))
