"""Import the released ModaVerse checkpoint (``ModaVerse-7b-v0``) into the serving layout.

The release (xinke-wang/ModaVerse) is a folder with ``pytorch_model.pt`` holding only the trained
tensors, applied on top of Vicuna-7B v0::

    linear_proj.weight / .bias                                                    -> the encoder's adaptor
    LLM.base_model.model.model.layers.<i>.self_attn.<q|k|v|o>_proj.lora_<A|B>.default.weight  -> peft adapter
    LLM.base_model.model.model.embed_tokens.weight, LLM.base_model.model.lm_head.weight       -> base model

plus the tokenizer files (with the 6 added tokens; the slow sentencepiece layout, or a
``tokenizer.json``) and ``config.json``. Before writing anything, the parts are checked against each
other and the base (``check_release``): vocabulary, hidden size, added-token ids, LoRA shapes. We write into ``out``:
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

from modaverse_runtime.errors import FailedPrecondition

from .compat import prime_transformers
from .prompt import added_token_id
from .template import ADDED_TOKENS
from .tiny import LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS
from .tokenizer import load_tokenizer

CHECKPOINT = "pytorch_model.pt"
# What convert-release writes under its output root (the chart's release.root points there).
OUT_BASE, OUT_ADAPTER, OUT_ADAPTOR = "base", "adapters/default", "adaptor"
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


def check_release(state: dict[str, torch.Tensor], tokenizer: Any, base_config: Any) -> None:
    """Refuse a release whose parts do not fit each other or the base (ValueError naming the part)."""
    embed, head = state[_EMBED], state[_HEAD]
    rows, hidden = int(embed.shape[0]), int(embed.shape[1])
    problems: list[str] = []
    if tuple(head.shape) != (rows, hidden):
        problems.append(f"lm_head is {list(head.shape)} but embed_tokens is {[rows, hidden]}")
    if hidden != int(base_config.hidden_size):
        problems.append(f"the checkpoint's hidden size is {hidden}, the base model's {base_config.hidden_size}")
    if rows - len(ADDED_TOKENS) != int(base_config.vocab_size):
        problems.append(
            f"the checkpoint has {rows} embedding rows; the base's {base_config.vocab_size} plus the release's "
            f"{len(ADDED_TOKENS)} added tokens would be {int(base_config.vocab_size) + len(ADDED_TOKENS)}"
        )
    if len(tokenizer) != rows:
        problems.append(f"the tokenizer has {len(tokenizer)} tokens but embed_tokens has {rows} rows")
    want = list(range(rows - len(ADDED_TOKENS), rows))
    got = [tokenizer.convert_tokens_to_ids(t) for t in ADDED_TOKENS]
    for token in ADDED_TOKENS:
        try:
            added_token_id(tokenizer, token)
        except FailedPrecondition as exc:
            problems.append(exc.message)
    if got != want:
        named = ", ".join(f"{t}={i}" for t, i in zip(ADDED_TOKENS, got, strict=True))
        problems.append(f"the added tokens must be ids {want[0]}..{want[-1]} in the release's order, got {named}")
    proj = state[_PROJ_W]
    if proj.dim() != 2 or int(proj.shape[0]) != hidden or tuple(state[_PROJ_B].shape) != (hidden,):
        problems.append(f"linear_proj is {list(proj.shape)}; it must map ImageBind's features to {hidden}")
    layers = int(base_config.num_hidden_layers)
    for key, value in state.items():
        m = _LORA_KEY.match(key)
        if m is None:
            continue
        if int(m.group(1)) >= layers:
            problems.append(f"{key}: the base model has {layers} layers")
        elif value.dim() != 2 or (m.group(3) == "A" and int(value.shape[1]) != hidden):
            problems.append(f"{key} is {list(value.shape)}; lora_A must be (r, {hidden})")
    if problems:
        raise ValueError("the release does not fit the base model: " + "; ".join(problems))


def _release_tokenizer(release: Path, base: Path) -> Any:
    if any((release / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        return load_tokenizer(str(release))
    tokenizer = load_tokenizer(str(base))  # rebuilt as the release's code builds it at start-up
    for token in ADDED_TOKENS:
        tokenizer.add_tokens([token])
    return tokenizer


def _write_base(state: dict[str, torch.Tensor], tokenizer: Any, base: Path, out: Path) -> None:
    prime_transformers()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    embed, head = state[_EMBED], state[_HEAD]
    model.resize_token_embeddings(int(embed.shape[0]), mean_resizing=False)  # overwritten below
    inputs: Any = model.get_input_embeddings()
    outputs: Any = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        inputs.weight.copy_(embed)
        outputs.weight.copy_(head)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def convert_release(release: Path, base: Path, out: Path) -> Path:
    """Writes ``out/{base,adapters/default,adaptor}``; ``out`` must not exist yet."""
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder")
    state = read_release(release)
    prime_transformers()
    from transformers import AutoConfig

    tokenizer = _release_tokenizer(release, base)
    check_release(state, tokenizer, AutoConfig.from_pretrained(str(base)))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".release-", dir=out.parent))
    try:
        _write_base(state, tokenizer, base, staging / OUT_BASE)
        _write_adapter(state, staging / OUT_ADAPTER, str(out / OUT_BASE))
        _write_adaptor(state, staging / OUT_ADAPTOR)
        os.rename(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out
