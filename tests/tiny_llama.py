"""A small LlamaConfig for tests that build their own LLaMA-architecture models (release, delta)."""

from __future__ import annotations

from typing import Any


def small_llama_config(vocab: int, hidden: int = 64, layers: int = 2, head_dim: int = 32, **extra: Any) -> Any:
    from modaverse_llm.compat import prime_transformers

    prime_transformers()
    from transformers import LlamaConfig

    settings: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // head_dim,
        "num_key_value_heads": hidden // head_dim,
        "head_dim": head_dim,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    return LlamaConfig(**{**settings, **extra})
