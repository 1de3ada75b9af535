"""convert-release on a small synthetic checkpoint with the release's exact key names and layout:
the served model's logits equal a direct peft reference's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from modaverse_encoder.adaptor import Adaptor
from modaverse_llm.cli import main
from modaverse_llm.compat import prime_transformers
from modaverse_llm.settings import LLMSettings
from modaverse_llm.tiny import LORA_TARGETS, build_tiny_tokenizer
from modaverse_llm.transformers_backend import TransformersBackend

HIDDEN, LAYERS, EMBED_DIM = 128, 2, 1024


def make_release(root: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    prime_transformers()
    from transformers import LlamaConfig, LlamaForCausalLM

    release, base = root / "release", root / "vicuna"
    build_tiny_tokenizer(release)  # the release ships its tokenizer with the 6 added tokens
    vocab = len(json.loads((release / "tokenizer.json").read_text())["model"]["vocab"])
    config = LlamaConfig(
        vocab_size=vocab,  # "Vicuna" before the added tokens
        hidden_size=HIDDEN,
        intermediate_size=256,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(base))
    full_vocab = vocab + 6
    g = torch.Generator().manual_seed(1)
    state = {
        "linear_proj.weight": torch.randn(HIDDEN, EMBED_DIM, generator=g),
        "linear_proj.bias": torch.randn(HIDDEN, generator=g),
        "LLM.base_model.model.model.embed_tokens.weight": torch.randn(full_vocab, HIDDEN, generator=g) * 0.05,
        "LLM.base_model.model.lm_head.weight": torch.randn(full_vocab, HIDDEN, generator=g) * 0.05,
    }
    for i in range(LAYERS):
        for proj in "qkvo":
            prefix = f"LLM.base_model.model.model.layers.{i}.self_attn.{proj}_proj"
            state[f"{prefix}.lora_A.default.weight"] = torch.randn(32, HIDDEN, generator=g) * 0.1
            state[f"{prefix}.lora_B.default.weight"] = torch.randn(HIDDEN, 32, generator=g) * 0.1
    torch.save(state, release / "pytorch_model.pt")
    (release / "config.json").write_text(json.dumps({"model": "ModaVerse-7b-v0"}))
    return release, base, state


def reference_logits(base: Path, state: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(base))
    model.resize_token_embeddings(state["LLM.base_model.model.lm_head.weight"].shape[0], mean_resizing=False)
    config = LoraConfig(r=32, lora_alpha=32, lora_dropout=0.1, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    peft_model: Any = get_peft_model(model, config)
    result = peft_model.load_state_dict(
        {k.removeprefix("LLM."): v for k, v in state.items() if "LLM." in k}, strict=False
    )
    assert not result.unexpected_keys
    peft_model.eval()
    with torch.no_grad():
        return peft_model(input_ids=ids).logits  # type: ignore[no-any-return]


def test_convert_release_matches_peft_reference(tmp_path: Path) -> None:
    release, base, state = make_release(tmp_path)
    out = tmp_path / "served"
    with pytest.raises(SystemExit) as code:
        main(["convert-release", "--release", str(release), "--base", str(base), "--out", str(out)])
    assert code.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == ["adapters", "adaptor", "base"]

    shared: Any = Adaptor.load(out / "adaptor").layers["shared"]
    assert torch.equal(shared.weight, state["linear_proj.weight"])
    assert torch.equal(shared.bias, state["linear_proj.bias"])

    settings = LLMSettings(
        profile="full", base_model=str(out / "base"), adapters={"default": out / "adapters" / "default"}
    )
    backend = TransformersBackend(settings)
    backend.load()
    try:
        ids = torch.tensor([[1, 820, 821, 823, 40, 41, 42]])  # includes the added tokens
        handle: Any = backend._handle
        with torch.no_grad():
            served = handle.model(input_ids=ids, adapter_names=["default"]).logits
            plain = handle.model(input_ids=ids, adapter_names=["__base__"]).logits
        expected = reference_logits(base, state, ids)
        torch.testing.assert_close(served, expected, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(plain, expected, atol=1e-3)  # the LoRA really is applied
        info = backend.info()
        assert info.adapters[0].rank == 32 and info.adapters[0].is_default
    finally:
        backend.unload()


def test_convert_release_rejects_other_checkpoints(tmp_path: Path) -> None:
    from modaverse_llm.release import convert_release

    (tmp_path / "release").mkdir()
    torch.save({"foo": torch.zeros(1)}, tmp_path / "release" / "pytorch_model.pt")
    with pytest.raises(ValueError, match="not a ModaVerse release checkpoint"):
        convert_release(tmp_path / "release", tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
