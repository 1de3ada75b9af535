"""A miniature of the published release, built in the test: a LLaMA-style sentencepiece tokenizer
(BPE with byte fallback, trained here, saved as ``tokenizer.model`` in the slow layout the release
and Vicuna v0 ship), a tiny "Vicuna" LlamaForCausalLM, and a ``pytorch_model.pt`` with the release's
key names. Nothing here imports the service's prompt code.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..tiny_llama import small_llama_config

HIDDEN, LAYERS, IMAGEBIND_DIM, RANK = 64, 2, 1024, 32
# The release's added tokens, in the order ModaVerse.__init__ adds them (configs/base.py).
RELEASE_ADDED = ["<Media>", "</Media>", "[TEXT]", "[IMAGE]", "[AUDIO]", "[VIDEO]"]
SLOW_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")

_WORDS = [
    "a",
    "the",
    "cat",
    "dog",
    "bird",
    "draw",
    "paint",
    "image",
    "picture",
    "photo",
    "sound",
    "audio",
    "video",
    "clip",
    "what",
    "is",
    "in",
    "this",
    "please",
    "generate",
    "make",
    "show",
    "describe",
    "Human",
    "Assistant",
    "Modality",
    "Prompt",
    "red",
    "blue",
    "green",
    "circle",
    "square",
    "sea",
    "sky",
    "music",
    "loud",
    "quiet",
]


def _corpus(lines: int = 3000) -> list[str]:
    rng = random.Random(0)
    out = []
    for _ in range(lines):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 10)))
        out.append(f"### Human: {words}\n### Assistant: Modality: [IMAGE] Prompt: {words} ###")
        out.append(words.capitalize() + rng.choice([".", "?", "!"]) + " 2024 ünïcode ✓")
    return out


def train_sentencepiece(folder: Path, vocab_size: int = 480) -> Path:
    """LLaMA's tokenizer settings: BPE, byte fallback, dummy prefix, whitespace kept as is."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"})
    )
    return folder / "tokenizer.model"


@dataclass(frozen=True)
class ReleaseWorld:
    vicuna: Path  # the base LLM, slow tokenizer layout, no added tokens
    release: Path  # pytorch_model.pt + the release's tokenizer files (slow layout, added_tokens.json)
    state: dict[str, torch.Tensor]
    vocab: int  # the base vocabulary (before the added tokens)

    def sentencepiece(self) -> Any:
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=str(self.release / "tokenizer.model"))

    def added_id(self, token: str) -> int:
        return self.vocab + RELEASE_ADDED.index(token)


def build_release_world(root: Path) -> ReleaseWorld:
    from transformers import LlamaForCausalLM

    vicuna, release = root / "vicuna-7b-v0", root / "ModaVerse-7b-v0"
    train_sentencepiece(vicuna)
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(vicuna / "tokenizer.model")).get_piece_size()
    # initializer_range 0.2: a next-token distribution far from uniform, so logprob checks have teeth.
    config = small_llama_config(vocab, HIDDEN, LAYERS, bos_token_id=1, eos_token_id=2, initializer_range=0.2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(vicuna))

    release.mkdir(parents=True)
    for name in SLOW_FILES:
        (release / name).write_bytes((vicuna / name).read_bytes())
    (release / "added_tokens.json").write_text(json.dumps({t: vocab + i for i, t in enumerate(RELEASE_ADDED)}))
    g = torch.Generator().manual_seed(1)
    rows = vocab + len(RELEASE_ADDED)
    state = {
        "linear_proj.weight": torch.randn(HIDDEN, IMAGEBIND_DIM, generator=g) * 0.05,
        "linear_proj.bias": torch.randn(HIDDEN, generator=g) * 0.05,
        "LLM.base_model.model.model.embed_tokens.weight": torch.randn(rows, HIDDEN, generator=g) * 0.5,
        "LLM.base_model.model.lm_head.weight": torch.randn(rows, HIDDEN, generator=g) * 0.5,
    }
    for i in range(LAYERS):
        for proj in "qkvo":
            prefix = f"LLM.base_model.model.model.layers.{i}.self_attn.{proj}_proj"
            state[f"{prefix}.lora_A.default.weight"] = torch.randn(RANK, HIDDEN, generator=g) * 0.1
            state[f"{prefix}.lora_B.default.weight"] = torch.randn(HIDDEN, RANK, generator=g) * 0.1
    torch.save(state, release / "pytorch_model.pt")
    (release / "config.json").write_text(json.dumps({"model": "ModaVerse-7b-v0"}))
    return ReleaseWorld(vicuna, release, state, vocab)


def release_model(world: ReleaseWorld) -> Any:
    """The release's LLM as its code assembles it: Vicuna, get_peft_model with its LoraConfig,
    resize_token_embeddings(len(tokenizer)), then load_state_dict(pytorch_model.pt, strict=False)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    class Release(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            llm = LlamaForCausalLM.from_pretrained(str(world.vicuna), dtype=torch.float32)
            config = LoraConfig(
                r=32, lora_alpha=32, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
            )
            self.LLM: Any = get_peft_model(llm, config)
            self.LLM.resize_token_embeddings(world.vocab + len(RELEASE_ADDED))
            self.linear_proj = torch.nn.Linear(IMAGEBIND_DIM, HIDDEN)

    model = Release()
    result = model.load_state_dict(world.state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return model.eval()
