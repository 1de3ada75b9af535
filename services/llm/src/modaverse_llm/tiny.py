"""The tiny profile's LLM artifacts: a real LlamaForCausalLM + tokenizer + peft LoRA, small sizes.

Built once, deterministically, into ``<model_dir>/tiny/llm/{base,adapters/default}`` and then loaded
through exactly the code that loads Vicuna + the release's adapter (full profile).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from modaverse_runtime.artifacts import ensure_built

from .compat import prime_transformers
from .template import ADDED_TOKENS

log = logging.getLogger(__name__)

# Must equal the encoder's tiny adaptor output (modaverse_encoder.tiny.TINY_LLM_HIDDEN_SIZE).
TINY_HIDDEN_SIZE = 256
TINY_VOCAB = 2048
TINY_CONTEXT = 1024
# The release's LoRA (docs/architecture.md#release-facts).
LORA_R, LORA_ALPHA, LORA_DROPOUT = 32, 32, 0.1
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
_READY = "base/model.safetensors"

_WORD_TEXT = (
    "a an the of to in on with for and or but is are was be this that it its you your me my we our they "
    "what which who how why where when can could would will please show make draw paint sing play tell "
    "write describe generate create give picture image photo video clip sound audio music song voice "
    "noise text answer question story poem cat dog bird fish horse tree flower sky sea sun moon car "
    "house city forest mountain river beach rain snow night day red green blue yellow black white orange "
    "purple circle square triangle star cross big small happy sad fast slow loud quiet old new one two "
    "three running flying swimming dancing singing playing walking sitting sleeping bright dark "
    "beautiful hello yes no thanks Modality Prompt Human Assistant media input about like looks sounds "
    "shows contains there here "
)
_WORDS = _WORD_TEXT.split()


def _corpus(lines: int = 4000, seed: int = 0) -> list[str]:
    """A deterministic synthetic corpus holding the template, the flags and everyday words."""
    import random

    rng = random.Random(seed)
    flags = ["[TEXT]", "[IMAGE]", "[AUDIO]", "[VIDEO]"]
    out = []
    for _ in range(lines):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        media = " ".join("<Media></Media>" for _ in range(rng.randint(0, 2)))
        reply = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 10)))
        out.append(f"### Human: {media} {words}\n### Assistant: Modality: {rng.choice(flags)} Prompt: {reply} ###")
        out.append(words.capitalize() + rng.choice([".", "?", "!", ","]) + " 0123456789")
    return out


def build_tiny_tokenizer(directory: Path, vocab_size: int = TINY_VOCAB) -> None:
    prime_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(ADDED_TOKENS),
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    fast.add_tokens(list(ADDED_TOKENS))  # ordinary added tokens, as the release adds them
    fast.save_pretrained(str(directory))


def build_tiny_base(directory: Path, seed: int = 0, layers: int = 2) -> None:
    prime_transformers()
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_HIDDEN_SIZE,
        intermediate_size=688,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=64,  # vLLM's CPU attention needs 64
        max_position_embeddings=TINY_CONTEXT,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.05,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(directory))


def build_lora_adapter(base_dir: Path, out_dir: Path, seed: int = 1, scale: float = 0.1) -> None:
    """A release-shaped LoRA (r=32, alpha=32, dropout 0.1, q/k/v/o) with random A *and* B, so it
    visibly changes the output (peft's default zero B would be a no-op)."""
    prime_transformers()
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(
        r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name:
                param.copy_(torch.randn(param.shape, generator=gen) / param.shape[1] ** 0.5)
            elif "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    peft_model.save_pretrained(str(out_dir))


def build_tiny_llm(directory: Path, seed: int = 0) -> None:
    base = directory / "base"
    base.mkdir(parents=True)
    build_tiny_tokenizer(base)
    build_tiny_base(base, seed)
    build_lora_adapter(base, directory / "adapters" / "default", seed + 1)


def tiny_llm_dir(model_dir: Path) -> Path:
    return model_dir / "tiny" / "llm"


def ensure_tiny_llm(model_dir: Path) -> Path:
    """Build the tiny artifacts if absent. Safe when several processes race to build."""
    return ensure_built(tiny_llm_dir(model_dir), _READY, build_tiny_llm, "tiny LLM artifacts")
