"""Import the released ModaVerse checkpoint (``ModaVerse-7b-v0``) into the serving layout.

The release (DESIGN §5) is a folder with ``pytorch_model.pt`` holding only the trained tensors,
applied on top of Vicuna-7B v0::

    linear_proj.weight / .bias                                                    -> the encoder's adaptor
    LLM.base_model.model.model.layers.<i>.self_attn.<q|k|v|o>_proj.lora_<A|B>.default.weight  -> peft adapter
    LLM.base_model.model.model.embed_tokens.weight, LLM.base_model.model.lm_head.weight       -> base model

plus the tokenizer files (with the 6 added tokens) and ``config.json``. We write into ``out``:
``base/`` (Vicuna with embed_tokens/lm_head resized to the release's vocabulary and replaced by the
trained ones, and the release's tokenizer), ``adapters/default/`` (a peft LoRA folder) and
``adaptor/`` (``adaptor_config.json`` + ``adaptor.safetensors`` with ``shared.weight/bias``, the
format of ``modaverse_encoder.adaptor.Adaptor``). Written to a staging folder, then renamed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .compat import prime_transformers
from .template import ADDED_TOKENS
from .tiny import LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS

CHECKPOINT = "pytorch_model.pt"
_LORA_KEY = re.compile(
    r"^LLM\.base_model\.model\.model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.lora_([AB])\.default\.weight$"
)
_EMBED = "LLM.base_model.model.model.embed_tokens.weight"
_HEAD = "LLM.base_model.model.lm_head.weight"
_PROJ_W, _PROJ_B = "linear_proj.weight", "linear_proj.bias"


def read_release(release: Path) -> dict[str, torch.Tensor]:
    path = release / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {release}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in (_EMBED, _HEAD, _PROJ_W, _PROJ_B) if k not in state]
    unknown = [k for k in state if k not in (_EMBED, _HEAD, _PROJ_W, _PROJ_B) and not _LORA_KEY.match(k)]
    if missing or unknown:
        raise ValueError(f"not a ModaVerse release checkpoint: missing {missing}, unexpected {unknown[:5]}")
    return {k: v for k, v in state.items()}


def _write_adapter(state: dict[str, torch.Tensor], out: Path, base_name: str) -> None:
    tensors: dict[str, torch.Tensor] = {}
    rank = 0
    for key, value in state.items():
        m = _LORA_KEY.match(key)
        if m is None:
            continue
        layer, proj, ab = m.groups()
        # peft saves without the adapter name: ...q_proj.lora_A.weight
        tensors[f"base_model.model.model.layers.{layer}.self_attn.{proj}_proj.lora_{ab}.weight"] = value.contiguous()
        if ab == "A":
            rank = int(value.shape[0])
    if not tensors:
        raise ValueError("the release checkpoint holds no LoRA tensors")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": rank,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": LORA_DROPOUT,
        "target_modules": LORA_TARGETS,
        "bias": "none",
        "inference_mode": True,
    }
    out.mkdir(parents=True)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})


def _write_adaptor(state: dict[str, torch.Tensor], out: Path) -> None:
    weight, bias = state[_PROJ_W], state[_PROJ_B]
    out.mkdir(parents=True)
    config: dict[str, object] = {"in_dim": int(weight.shape[1]), "out_dim": int(weight.shape[0]), "mode": "shared"}
    config.update(rows=1, kinds=["image", "video", "audio"])
    (out / "adaptor_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(
        {"shared.weight": weight.contiguous(), "shared.bias": bias.contiguous()},
        str(out / "adaptor.safetensors"),
        metadata={"format": "pt"},
    )


def _write_base(state: dict[str, torch.Tensor], release: Path, base: Path, out: Path) -> None:
    prime_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base))
    embed, head = state[_EMBED], state[_HEAD]
    model.resize_token_embeddings(int(embed.shape[0]), mean_resizing=False)  # overwritten below
    inputs: Any = model.get_input_embeddings()
    outputs: Any = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        inputs.weight.copy_(embed)
        outputs.weight.copy_(head)
    model.save_pretrained(str(out))
    has_tokenizer = any((release / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(str(release if has_tokenizer else base))
    if not has_tokenizer:
        tokenizer.add_tokens(list(ADDED_TOKENS))
    if len(tokenizer) != embed.shape[0]:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but embed_tokens has {embed.shape[0]} rows")
    tokenizer.save_pretrained(str(out))


def convert_release(release: Path, base: Path, out: Path) -> Path:
    """Writes ``out/{base,adapters/default,adaptor}``; ``out`` must not exist yet."""
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder")
    state = read_release(release)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".release-", dir=out.parent))
    try:
        _write_base(state, release, base, staging / "base")
        _write_adapter(state, staging / "adapters" / "default", str(out / "base"))
        _write_adaptor(state, staging / "adaptor")
        os.rename(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out
