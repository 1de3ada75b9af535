"""The tiny profile's artifacts: the release's shapes at small sizes, and the fields vLLM needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modaverse_encoder.tiny import TINY_LLM_HIDDEN_SIZE
from modaverse_llm.artifacts import resolve_artifacts
from modaverse_llm.settings import LLMSettings
from modaverse_llm.template import ADDED_TOKENS
from modaverse_llm.tiny import ensure_tiny_llm


def test_layout_and_shapes(tiny_llm: Path, tokenizer: Any) -> None:
    config = json.loads((tiny_llm / "base" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] == TINY_LLM_HIDDEN_SIZE == 256
    assert config["head_dim"] == 64 and config["num_attention_heads"] * 64 == 256  # vLLM CPU attention
    assert config["vocab_size"] == len(tokenizer) < 4096
    ids = tokenizer.convert_tokens_to_ids(list(ADDED_TOKENS))
    assert len(set(ids)) == 6 and tokenizer.unk_token_id not in ids
    text = "### Human: <Media></Media> draw a cat\n### Assistant: Modality: [IMAGE] Prompt: a cat ###"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    adapter = json.loads((tiny_llm / "adapters" / "default" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (32, 32, 0.1)
    assert sorted(adapter["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_build_is_idempotent_and_resolved_for_tiny(tiny_llm: Path, model_dir: Path) -> None:
    before = (tiny_llm / "base" / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_llm(model_dir) == tiny_llm
    assert (tiny_llm / "base" / "model.safetensors").stat().st_mtime_ns == before
    artifacts = resolve_artifacts(LLMSettings(model_dir=model_dir))
    assert artifacts.base == str(tiny_llm / "base")
    assert artifacts.adapters == {"default": tiny_llm / "adapters" / "default"}
