"""The trainable ModaVerse: frozen base LLM + LoRA + added-token rows, and the adaptor.

What trains (the release's single stage, docs/architecture.md#release-facts): the adaptor,
LoRA (r=32, alpha=32, dropout 0.1 on q/k/v/o), and the rows of the added tokens (``<Media>``, ``</Media>``, the four
flags) in ``embed_tokens`` and ``lm_head``. Those two matrices get ``requires_grad`` but a gradient
hook zeroes every other row, and they sit in a weight-decay-free optimizer group, so AdamW never
moves the pretrained rows. ``train_base=True`` (tiny profile only: its base LLM is random, not a
pretrained Vicuna) makes every base weight trainable too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modaverse_encoder.adaptor import Adaptor, AdaptorConfig
from modaverse_llm.compat import prime_transformers
from modaverse_llm.template import ADDED_TOKENS
from modaverse_llm.tiny import LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGETS

from .data import Batch
from .whitening import fit_whitening, fold, identity_whitening


@dataclass(frozen=True)
class ModelSpec:
    base: str  # base LLM folder (tokenizer beside it)
    adaptor: Path | None  # adaptor folder to start from; None = a fresh one
    embed_dim: int  # ImageBind output size (adaptor in_dim)
    adaptor_mode: str = "shared"
    train_base: bool = False
    lora_r: int = LORA_R
    lora_alpha: int = LORA_ALPHA
    lora_dropout: float = LORA_DROPOUT
    whiten: bool = True  # train the adaptor on whitened vectors; folded back at export (whitening.py)
    whiten_scale: float = 1.0  # norm of a whitened vector


def lora_config(spec: ModelSpec) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )


def _row_mask_hook(mask: torch.Tensor) -> Any:
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * mask.to(grad.dtype)[:, None]

    return hook


class ModaVerseModel(nn.Module):
    features: torch.Tensor  # (media files, embed_dim): the cached ImageBind vectors, indexed by batches
    white_mean: torch.Tensor  # (embed_dim,)
    white_matrix: torch.Tensor  # (embed_dim, embed_dim)

    def __init__(
        self,
        llm: Any,
        adaptor: Adaptor,
        tokenizer: Any,
        spec: ModelSpec,
        features: torch.Tensor,
        whitening: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        super().__init__()
        self.llm = llm  # peft PeftModel around LlamaForCausalLM
        self.adaptor = adaptor
        self.tokenizer = tokenizer
        self.spec = spec
        self.register_buffer("features", features, persistent=False)
        self.register_buffer("white_mean", whitening[0], persistent=False)
        self.register_buffer("white_matrix", whitening[1], persistent=False)
        self.added_ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in ADDED_TOKENS]
        self._configure_trainable()

    def _configure_trainable(self) -> None:
        base = self.llm.get_base_model()
        for name, param in self.llm.named_parameters():
            param.requires_grad_("lora_" in name or self.spec.train_base)
        self.row_masked: list[nn.Parameter] = []
        if not self.spec.train_base:
            vocab = base.get_input_embeddings().weight.shape[0]
            mask = torch.zeros(vocab)
            mask[self.added_ids] = 1.0
            for weight in {id(w): w for w in (base.get_input_embeddings().weight, base.lm_head.weight)}.values():
                weight.requires_grad_(True)
                weight.register_hook(_row_mask_hook(mask))
                self.row_masked.append(weight)
        self.adaptor.requires_grad_(True)

    def trainable_parameters(self) -> int:
        """Parameters that training changes: for row-masked matrices only the added rows count."""
        masked = {id(p) for p in self.row_masked}
        total = sum(p.numel() for p in self.parameters() if p.requires_grad and id(p) not in masked)
        return total + sum(len(self.added_ids) * p.shape[1] for p in self.row_masked)

    def project(self, kind: str, vectors: torch.Tensor) -> torch.Tensor:
        """Raw ImageBind vectors (N, D) → adaptor rows (N, rows, hidden), as the exported adaptor computes."""
        rows: torch.Tensor = self.adaptor(kind, (vectors - self.white_mean) @ self.white_matrix)
        return rows

    def serving_adaptor(self) -> Adaptor:
        """The adaptor with the whitening folded in: what the encoder service runs on raw vectors."""
        return fold(self.adaptor, self.white_mean, self.white_matrix)

    def embed(self, batch: Batch) -> torch.Tensor:
        embeds: torch.Tensor = self.llm.get_input_embeddings()(batch.ids)
        if batch.media_b.numel() == 0:
            return embeds
        rows = torch.empty(batch.media_b.numel(), embeds.shape[-1], dtype=embeds.dtype, device=embeds.device)
        vectors = self.features[batch.media_index]
        for kind in set(batch.media_kinds):
            sel = torch.tensor([k == kind for k in batch.media_kinds], device=embeds.device)
            rows[sel] = self.project(kind, vectors[sel])[:, 0].to(embeds.dtype)
        return embeds.index_put((batch.media_b, batch.media_p), rows)

    def loss(self, batch: Batch) -> torch.Tensor:
        out = self.llm(inputs_embeds=self.embed(batch), attention_mask=batch.attention_mask, labels=batch.labels)
        loss: torch.Tensor = out.loss
        return loss


def build_model(
    spec: ModelSpec, device: torch.device, features: torch.Tensor, fit_rows: Sequence[int] | None = None
) -> ModaVerseModel:
    """``fit_rows``: the feature rows (training media) the whitening is fitted on (default: all)."""
    prime_transformers()
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.base)
    llm = AutoModelForCausalLM.from_pretrained(spec.base, dtype=torch.float32)
    llm = get_peft_model(llm, lora_config(spec))
    hidden = int(llm.config.hidden_size)
    if spec.adaptor is not None:
        adaptor = Adaptor.load(spec.adaptor)
        if (adaptor.config.in_dim, adaptor.config.out_dim) != (spec.embed_dim, hidden):
            raise ValueError(
                f"adaptor {spec.adaptor} is {adaptor.config.in_dim}->{adaptor.config.out_dim}, "
                f"need {spec.embed_dim}->{hidden}"
            )
    else:
        adaptor = Adaptor(AdaptorConfig(in_dim=spec.embed_dim, out_dim=hidden, mode=spec.adaptor_mode))
    # A given adaptor already works on raw vectors; whitening only a fresh one keeps its meaning.
    sample = features if fit_rows is None else features[list(fit_rows)]
    if spec.whiten and spec.adaptor is None and sample.shape[0] > 1:
        whitening = fit_whitening(sample.float().cpu(), scale=spec.whiten_scale)
    else:
        whitening = identity_whitening(spec.embed_dim)
    return ModaVerseModel(llm, adaptor, tokenizer, spec, features, whitening).to(device)
