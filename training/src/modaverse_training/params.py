"""Trainable-parameter counts of a configuration, on the meta device (no weights are allocated).

For the release's configuration (Vicuna-7B = LLaMA hidden 4096, 32 layers, vocab 32000 + 6 added
tokens; LoRA r=32 on q/k/v/o; one shared Linear(1024 → 4096) adaptor; the added tokens' rows of
``embed_tokens`` and ``lm_head``) this builds the real peft model on ``meta`` and counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modaverse_encoder.adaptor import KINDS, Adaptor, AdaptorConfig
from modaverse_llm.compat import prime_transformers
from modaverse_llm.template import ADDED_TOKENS
from modaverse_llm.tiny import LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGETS


@dataclass(frozen=True)
class SizeConfig:
    hidden: int = 4096
    intermediate: int = 11008
    layers: int = 32
    heads: int = 32
    vocab: int = 32000 + len(ADDED_TOKENS)
    embed_dim: int = 1024  # ImageBind-huge output
    lora_r: int = LORA_R
    adaptor_mode: str = "shared"
    added_tokens: int = len(ADDED_TOKENS)
    tie_embeddings: bool = False  # LLaMA: separate lm_head


@dataclass(frozen=True)
class ParamCount:
    lora: int
    adaptor: int
    added_rows: int
    base_total: int  # the frozen base LLM, for scale

    @property
    def trainable(self) -> int:
        return self.lora + self.adaptor + self.added_rows


def count_parameters(size: SizeConfig = SizeConfig()) -> ParamCount:
    prime_transformers()
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        tie_word_embeddings=size.tie_embeddings,
    )
    with torch.device("meta"):
        llm = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
        base_total = sum(p.numel() for p in llm.parameters())
        lora = LoraConfig(r=size.lora_r, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=LORA_TARGETS)
        peft_model = get_peft_model(llm, lora)
        adaptor = Adaptor(AdaptorConfig(in_dim=size.embed_dim, out_dim=size.hidden, mode=size.adaptor_mode))
    lora_count = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    matrices = 1 if size.tie_embeddings else 2
    return ParamCount(
        lora=lora_count,
        adaptor=sum(p.numel() for p in adaptor.parameters()),
        added_rows=size.added_tokens * size.hidden * matrices,
        base_total=base_total,
    )


def hand_count(size: SizeConfig) -> int:
    """The same number by arithmetic (docs/training.md): each LoRA pair on a d×d projection adds r·(d+d)."""
    lora = size.layers * len(LORA_TARGETS) * size.lora_r * (size.hidden + size.hidden)
    adaptors = 1 if size.adaptor_mode == "shared" else len(KINDS)
    adaptor = adaptors * (size.embed_dim * size.hidden + size.hidden)
    rows = size.added_tokens * size.hidden * (1 if size.tie_embeddings else 2)
    return lora + adaptor + rows
