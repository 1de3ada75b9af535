"""Training the tiny profile's text-to-image generator on the shapes world, on CPU in a few minutes.

The tiny profile serves a real diffusers ``StableDiffusionPipeline`` (``modaverse_generators.tiny``) whose
weights are random: it draws noise. This module trains those very components, as Stable Diffusion was
trained, on captioned shapes-world images ("a red circle") at the generator's resolution (64 px):

1. **render** the images: the describer's world (``shapes.render_image`` at 224 px), downsampled to 64 px;
2. **autoencoder**: the ``AutoencoderKL`` learns to reconstruct them (pixel loss plus a tiny KL term);
3. **latents**: every image is encoded once, and ``vae.config.scaling_factor`` is set to 1 / the latents'
   standard deviation (as Stable Diffusion's 0.18215 was), so the diffusion works on unit-variance latents;
4. **denoiser**: the ``UNet2DConditionModel`` learns epsilon prediction on the DDPM schedule the pipeline's
   PNDM scheduler implies (1,000 steps, scaled_linear 0.00085-0.012), conditioned on the CLIP text
   encoder's last hidden states; captions are dropped to "" at random, so the pipeline's classifier-free
   guidance (7.5 by default) has an unconditional model to push away from. The (random) text encoder may
   be trained jointly at a small learning rate (``text_lr``; 0 keeps it frozen, as Stable Diffusion's is);
5. **save**: ``save_pretrained`` into the generator folders, as text-to-image (``StableDiffusionPipeline``)
   and image-to-image (``StableDiffusionImg2ImgPipeline`` over the same components), which the generator
   service loads unchanged with ``AutoPipelineForText2Image`` / ``AutoPipelineForImage2Image``.

Everything is deterministic for a seed (on one device and thread count). Each phase shows progress and
the time left on the shared :class:`~modaverse_training.progress.Progress` display.

    dirs = generator_dirs(model_dir)                   # {"text-to-image": ..., "image-to-image": ...}
    summary = train_image_generator(dirs, config=GeneratorTrainConfig(), progress=Progress.create(), seed=0)
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from modaverse_generators.imports import diffusers
from modaverse_generators.tiny import build_text_to_image, tiny_generator_dir
from modaverse_runtime.devices import resolve_device
from modaverse_runtime.samples import SHAPES

from .progress import Progress
from .shapes import COLORS, IMAGE_SIZE, render_image
from .trainer import torch_threads

log = logging.getLogger(__name__)

KINDS = ("text-to-image", "image-to-image")  # the generator kinds that share the trained components
_MARKER = "model_index.json"


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """What one run does. The defaults take about 4 minutes on 2 CPU cores."""

    images: int = 4000  # rendered training images (captions cycle through the 30 colour x shape pairs)
    image_size: int = 64  # the tiny profile's default generation size
    render_size: int = IMAGE_SIZE  # rendered as the describer's world, then downsampled to image_size
    # autoencoder
    vae_steps: int = 300
    vae_batch_size: int = 16
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6  # per latent element relative to the summed pixel loss (Stable Diffusion's)
    # Per image of a batch, this many more are decoded from a mixture of two images' latents (random weights)
    # with the same mixture of their pixels as the target, which keeps the latent space near linear in the
    # pixels. Without it a red shape's latent faded towards the background's (a blurry early prediction, a
    # noisy x_t) is an orange, then a yellow one: all three lie on that line, 0.6 latent deviations apart
    # (the background, 6), and the denoiser draws red as orange. 0: none.
    latent_mix: float = 0.0
    # denoiser
    steps: int = 1400
    batch_size: int = 32
    lr: float = 2e-3
    text_lr: float = 0.0  # the CLIP text encoder's learning rate while the denoiser trains; 0: frozen
    # Text-encoder warm-up, before the denoiser: every position from the end-of-text token on (Stable Diffusion
    # pads with it: 73 of the 77 states of "a red circle") learns to hold the caption's words (a multi-label
    # bag-of-words probe, thrown away after). The random encoder's states are nearly the same for every prompt
    # (cosine > 0.95: at CLIP's init scale the first attention's average over the prompt swamps each token), and
    # the UNet's attention, dominated by those 73 positions, could hardly tell "red" from "orange". 0: none.
    text_warmup_steps: int = 0
    text_warmup_lr: float = 1e-2
    warmup: int = 50  # steps of linear warm-up (both phases), then cosine decay to min_lr_ratio
    min_lr_ratio: float = 0.1
    caption_dropout: float = 0.1  # fraction of captions replaced by "" (classifier-free guidance)
    # Timesteps are drawn in proportion to the epsilon-loss weight clamp(SNR, snr_floor, snr_gamma) / SNR, i.e.
    # an x0-space weight of SNR clamped to [snr_floor, snr_gamma] (importance sampling: the expected gradient
    # of that weighted loss, with less variance). snr_gamma is Min-SNR (Hang et al. 2023): less time on the
    # nearly clean end. snr_floor: more on the noisy end, where the plain loss hardly tells colours apart
    # (x0 errors count there SNR times: 0.008 at t=951, the first sampling step) and the model learns to read
    # a shape's colour from the noise instead of the prompt (Stable Diffusion's terminal SNR is not zero).
    snr_gamma: float = 5.0  # 0: no upper clamp
    snr_floor: float = 0.0  # 0: no lower clamp (plain epsilon MSE at high noise)
    # Timesteps from this one on are trained on pure noise, as sampling starts: x_t ~ N(0, I) with the target
    # epsilon (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), so the prediction must take the prompt's colour and
    # shape. The schedule's terminal SNR is not zero: at t=999 a 64 px shape's colour is still plain in x_t
    # (its mean over the shape is ~3 noise deviations away), so a model trained only on x_t = sqrt(abar) x0 +
    # sqrt(1 - abar) eps reads the colour from the noise, and from pure noise draws a random one. Keep it at or
    # below the first sampling timestep (PNDM with 20 steps: 951; 10: 901). 1000: off.
    signal_free_from: int = 1000
    # Their loss is the x0 error times this (the epsilon error x weight / SNR): in epsilon terms the image is a
    # sqrt(SNR) ~ 0.1 part of the target, too small a part to be learnt in a short run (the epsilon loss weighs
    # x0 errors by SNR, ~0.01 there); 1 would drown the other timesteps.
    signal_free_weight: float = 0.2
    # The guidance scale the pipeline samples with (StableDiffusionPipeline's default). From pure noise the
    # conditional prediction is the caption's mean image and the unconditional one the mean of all images, and
    # guidance multiplies their difference: the first steps would aim at a 7.5-fold exaggerated blob (the shape
    # ends up swollen, the background tinted). So there the conditional target is the unconditional mean plus
    # 1/guidance_scale of the way to the image; guided, the step aims at the caption's mean. 1: off.
    guidance_scale: float = 1.0
    ema_decay: float = 0.999  # the saved denoiser is the exponential moving average; 0: the last weights
    max_grad_norm: float = 1.0
    encode_batch_size: int = 128
    # where
    device: str = "cpu"  # "cpu", "cuda", "cuda:1" or "auto" (CUDA when available)
    threads: int = 2  # torch CPU threads (0: torch's default)


@dataclass
class TrainingSet:
    """Captioned images: ``pixels`` is uint8 (N, 3, H, W); ``captions[i]`` describes image i."""

    pixels: torch.Tensor
    captions: list[str]

    def __post_init__(self) -> None:
        pixels = self.pixels
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), not {pixels.dtype} {tuple(pixels.shape)}")
        if len(pixels) != len(self.captions):
            raise ValueError(f"{len(self.captions)} captions for {len(pixels)} images")

    def __len__(self) -> int:
        return len(self.captions)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``index`` as floats in [-1, 1] (the VAE's range)."""
        return self.pixels[index].float() / 127.5 - 1.0

    @classmethod
    def from_images(cls, images: Sequence[Image.Image], captions: Sequence[str], size: int) -> TrainingSet:
        """From PIL images of any size (resized to ``size`` x ``size``)."""
        return cls(torch.from_numpy(np.stack([_to_array(img, size) for img in images])), list(captions))


def _to_array(img: Image.Image, size: int) -> np.ndarray:
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def world_captions() -> list[str]:
    """The 30 shapes-world image captions, "a red circle" .. "an orange cross" style (as shapes.py writes)."""
    return [f"a {color} {shape}" for color in COLORS for shape in SHAPES]


def render_training_set(
    count: int,
    *,
    size: int = 64,
    render_size: int = IMAGE_SIZE,
    seed: int = 0,
    on_image: Callable[[], None] | None = None,
) -> TrainingSet:
    """``count`` shapes-world images, every colour x shape pair in turn, rendered at ``render_size`` (the
    describer's world) and downsampled to ``size``; deterministic for the seed."""
    rng = random.Random(seed)
    pairs = [(color, shape) for color in COLORS for shape in SHAPES]
    pixels = np.empty((count, 3, size, size), dtype=np.uint8)
    captions = []
    for i in range(count):
        color, shape = pairs[i % len(pairs)]
        pixels[i] = _to_array(render_image(shape, color, rng, render_size), size)
        captions.append(f"a {color} {shape}")
        if on_image is not None:
            on_image()
    return TrainingSet(torch.from_numpy(pixels), captions)


def generator_dirs(model_dir: Path, kinds: Sequence[str] = KINDS) -> dict[str, Path]:
    """The tiny profile's generator folders (``<model_dir>/tiny/generators/<kind>``) that the service loads."""
    return {kind: tiny_generator_dir(model_dir, kind) for kind in kinds}


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 2)


def train_image_generator(
    out_dirs: Mapping[str, Path],
    *,
    data: TrainingSet | None = None,
    config: GeneratorTrainConfig = GeneratorTrainConfig(),
    progress: Progress | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the tiny text-to-image pipeline and save it into ``out_dirs`` (kind -> folder; kinds from
    :data:`KINDS`, e.g. :func:`generator_dirs`). ``data``: the captioned images (default: ``config.images``
    rendered shapes-world images). Each folder is replaced atomically. Returns a JSON-able summary."""
    unknown = set(out_dirs) - set(KINDS)
    if unknown:
        raise ValueError(f"no generator kind {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    progress = progress if progress is not None else Progress.off()
    device = resolve_device(config.device)
    timer = _Timer()
    started = time.perf_counter()
    with torch_threads(config.threads):
        if data is None:
            with (
                timer.phase("render"),
                progress.stage("rendering generator images", total=config.images, unit="image") as stage,
            ):
                data = render_training_set(
                    config.images,
                    size=config.image_size,
                    render_size=config.render_size,
                    seed=seed,
                    on_image=lambda: stage.update(),
                )
        torch.manual_seed(seed)
        pipe = build_text_to_image()  # the served architecture, randomly initialised for the seed
        pipe.vae.to(device)
        pipe.unet.to(device)
        pipe.text_encoder.to(device)
        gen = torch.Generator().manual_seed(seed + 1)  # data order, noise and timesteps (on the CPU)
        with timer.phase("autoencoder"):
            vae_losses = train_autoencoder(pipe.vae, data, config, gen, progress, device)
        with timer.phase("latents"):
            mean, std = encode_latents(pipe.vae, data, config.encode_batch_size, progress, device)
        latent_std = float(mean.std())
        scaling = 1.0 / latent_std
        pipe.vae.register_to_config(scaling_factor=scaling)
        with timer.phase("text encoder"):
            text_losses = warm_up_text_encoder(pipe, data.captions, config, progress, device)
        with timer.phase("denoiser"):
            unet_losses = train_denoiser(pipe, data.captions, mean, std, config, gen, progress, device)
        with timer.phase("save"), progress.stage("saving generator", total=len(out_dirs), unit="pipeline") as stage:
            pipe.to(torch.device("cpu"))
            for kind, folder in out_dirs.items():
                pipeline = pipe if kind == "text-to-image" else _image_to_image(pipe)
                _save(pipeline, Path(folder))
                stage.update()
    tail = unet_losses[-min(50, len(unet_losses)) :] if unet_losses else [math.nan]
    return {
        "images": len(data),
        "captions": len(set(data.captions)),
        "image_size": int(data.pixels.shape[-1]),
        "device": str(device),
        "seed": seed,
        "vae_losses": vae_losses,
        "vae_loss": vae_losses[-1] if vae_losses else math.nan,
        "latent_std": latent_std,
        "latent_mean": float(mean.mean()),
        "scaling_factor": scaling,
        "text_losses": text_losses,
        "unet_loss": sum(tail) / len(tail),
        "unet_steps": len(unet_losses),
        "seconds": {**timer.seconds, "total": round(time.perf_counter() - started, 2)},
        "dirs": {kind: str(path) for kind, path in out_dirs.items()},
        "config": asdict(config),
    }


# --- phases -------------------------------------------------------------------------------------------
def train_autoencoder(
    vae: Any,
    data: TrainingSet,
    config: GeneratorTrainConfig,
    gen: torch.Generator,
    progress: Progress,
    device: torch.device,
) -> list[float]:
    """Reconstruction (MSE on [-1, 1] pixels) of posterior samples, plus ``kl_weight`` x KL; returns the
    loss per step."""
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(config.vae_steps, config))
    losses: list[float] = []
    with progress.stage("training generator autoencoder", total=config.vae_steps, unit="step") as stage:
        for _ in range(config.vae_steps):
            index = torch.randint(len(data), (config.vae_batch_size,), generator=gen)
            x = data.batch(index).to(device)
            posterior = vae.encode(x).latent_dist
            eps = torch.randn(posterior.mean.shape, generator=gen).to(device)
            z = posterior.mean + posterior.std * eps
            mixed = round(len(x) * config.latent_mix)
            if mixed:
                first = torch.randint(len(x), (mixed,), generator=gen)
                second = (first + torch.randint(1, len(x), (mixed,), generator=gen)) % len(x)  # another image
                w = torch.rand((mixed, 1, 1, 1), generator=gen).to(device)
                z = torch.cat([z, w * z[first] + (1 - w) * z[second]])
                x = torch.cat([x, w * x[first] + (1 - w) * x[second]])
            rec = vae.decode(z).sample
            kl = posterior.kl().mean() / x[0].numel()  # summed over latent elements, per image pixel value
            loss: torch.Tensor = torch.nn.functional.mse_loss(rec, x) + config.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(vae.parameters(), config.max_grad_norm)
            opt.step()
            sched.step()
            losses.append(loss.item())
            stage.update(loss=losses[-1])
    vae.eval()
    vae.requires_grad_(False)
    return losses


@torch.no_grad()
def encode_latents(
    vae: Any,
    data: TrainingSet,
    batch_size: int,
    progress: Progress,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior mean and standard deviation of every image's latent (unscaled), on the CPU."""
    means, stds = [], []
    with progress.stage("encoding generator latents", total=len(data), unit="image") as stage:
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)))
            posterior = vae.encode(data.batch(index).to(device)).latent_dist
            means.append(posterior.mean.cpu())
            stds.append(posterior.std.cpu())
            stage.update(len(index))
    return torch.cat(means), torch.cat(stds)


def warm_up_text_encoder(
    pipe: Any, captions: Sequence[str], config: GeneratorTrainConfig, progress: Progress, device: torch.device
) -> list[float]:
    """The CLIP text encoder learns to carry each caption's words in every state from its end-of-text token on
    (binary cross-entropy of a linear probe onto the captions' word tokens); returns the loss per step."""
    if config.text_warmup_steps <= 0:
        return []
    text_encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
    ids = _tokenize(tokenizer, _prompts(captions))
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    words = sorted(set(ids.flatten().tolist()) - special)
    column = {token: k for k, token in enumerate(words)}
    bags = torch.zeros(len(ids), len(words))
    for row, prompt_ids in enumerate(ids.tolist()):
        for token in set(prompt_ids) - special:
            bags[row, column[token]] = 1.0
    ended = (ids == tokenizer.eos_token_id).int().cumsum(dim=1) > 0  # the end-of-text token and the padding
    targets = bags[:, None, :].expand(-1, ids.shape[1], -1)[ended].to(device)
    probe = torch.nn.Linear(text_encoder.config.hidden_size, len(words)).to(device)
    text_encoder.requires_grad_(True)
    text_encoder.train()
    opt = torch.optim.Adam([*text_encoder.parameters(), *probe.parameters()], lr=config.text_warmup_lr)
    ids, ended = ids.to(device), ended.to(device)
    losses: list[float] = []
    with progress.stage("warming up generator text encoder", total=config.text_warmup_steps, unit="step") as stage:
        for _ in range(config.text_warmup_steps):
            logits = probe(text_encoder(ids)[0][ended])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            losses.append(loss.item())
            stage.update(loss=losses[-1])
    text_encoder.eval().requires_grad_(False)
    return losses


def train_denoiser(
    pipe: Any,
    captions: Sequence[str],
    mean: torch.Tensor,
    std: torch.Tensor,
    config: GeneratorTrainConfig,
    gen: torch.Generator,
    progress: Progress,
    device: torch.device,
) -> list[float]:
    """Epsilon prediction on scaled latents (``vae.config.scaling_factor`` must be set); the UNet (and the
    text encoder with ``text_lr``) end as their moving averages. Returns the loss per step."""
    unet, text_encoder = pipe.unet, pipe.text_encoder
    noise_schedule = diffusers().DDPMScheduler.from_config(pipe.scheduler.config)  # 1000 steps, scaled_linear
    alphas = noise_schedule.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, min=config.snr_floor, max=config.snr_gamma if config.snr_gamma > 0 else None) / snr
    timestep_probs = (weights / weights.sum()).cpu()
    scaling = float(pipe.vae.config.scaling_factor)
    prompts = _prompts(captions)
    prompt_of = {prompt: i for i, prompt in enumerate(prompts)}
    caption_ids = torch.tensor([prompt_of[c] for c in captions])
    token_ids = _tokenize(pipe.tokenizer, prompts).to(device)

    train_text = config.text_lr > 0
    text_encoder.requires_grad_(train_text)
    text_encoder.train(train_text)
    unet.train()
    groups: list[dict[str, Any]] = [{"params": list(unet.parameters()), "lr": config.lr}]
    if train_text:
        groups.append({"params": list(text_encoder.parameters()), "lr": config.text_lr})
    trained = [p for group in groups for p in group["params"]]
    ema = [p.detach().clone() for p in trained] if config.ema_decay > 0 else []
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(config.steps, config))
    with torch.no_grad():
        frozen_states = None if train_text else text_encoder(token_ids)[0]
    uncond = len(prompts) - 1
    mean_image = (mean.mean(dim=0) * scaling).to(device)  # what an unconditional model predicts from pure noise
    losses: list[float] = []
    with progress.stage("training generator denoiser", total=config.steps, unit="step") as stage:
        for step in range(config.steps):
            b = config.batch_size
            index = torch.randint(len(captions), (b,), generator=gen)
            latent_noise = torch.randn((b, *mean.shape[1:]), generator=gen)
            latents = ((mean[index] + std[index] * latent_noise) * scaling).to(device)
            noise = torch.randn(latents.shape, generator=gen).to(device)
            t = torch.multinomial(timestep_probs, b, replacement=True, generator=gen).to(device)
            dropped = torch.rand(b, generator=gen) < config.caption_dropout
            prompt = torch.where(dropped, torch.full_like(index, uncond), caption_ids[index]).to(device)
            states = text_encoder(token_ids)[0] if frozen_states is None else frozen_states
            noisy = noise_schedule.add_noise(latents, noise, t)
            target = noise
            free = (t >= config.signal_free_from).view(-1, 1, 1, 1)
            if bool(free.any()):
                a = alphas[t].view(-1, 1, 1, 1)
                x0 = latents
                if config.guidance_scale != 1:
                    conditional = free & (~dropped).to(device).view(-1, 1, 1, 1)
                    x0 = torch.where(conditional, mean_image + (latents - mean_image) / config.guidance_scale, x0)
                target = torch.where(free, (noise - a.sqrt() * x0) / (1 - a).sqrt(), target)
                noisy = torch.where(free, noise, noisy)
            pred = unet(noisy, t, encoder_hidden_states=states[prompt]).sample
            per_row = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))
            per_row = torch.where(free.view(-1), per_row * config.signal_free_weight / snr[t], per_row)
            loss = per_row.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(trained, config.max_grad_norm)
            opt.step()
            sched.step()
            if ema:
                decay = min(config.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in trained], 1 - decay)
            losses.append(float(per_row.mean()))
            stage.update(loss=losses[-1], lr=float(sched.get_last_lr()[0]))
    with torch.no_grad():
        for p, average in zip(trained, ema, strict=True):
            p.copy_(average)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return losses


# --- helpers ------------------------------------------------------------------------------------------
def _prompts(captions: Sequence[str]) -> list[str]:
    """The distinct captions, sorted, then "" (the unconditional prompt of classifier-free guidance)."""
    return [*sorted(set(captions) - {""}), ""]


def _tokenize(tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids exactly as ``StableDiffusionPipeline.encode_prompt`` makes them (padded to 77)."""
    out = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    ids: torch.Tensor = out.input_ids
    return ids


def _schedule(steps: int, config: GeneratorTrainConfig) -> Callable[[int], float]:
    warmup = min(config.warmup, max(1, steps // 10))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = min(1.0, (step - warmup) / max(1, steps - warmup))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))

    return factor


def _image_to_image(pipe: Any) -> Any:
    return diffusers().StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)


def _save(pipeline: Any, target: Path) -> None:
    """``save_pretrained`` into a staging folder beside ``target``, then swapped in (readers never see a
    half-written pipeline; a service that already loaded the old one keeps it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    old = target.parent / f".{target.name}-old-{os.getpid()}"
    try:
        pipeline.save_pretrained(staging, safe_serialization=True)
        if not (staging / _MARKER).is_file():
            raise RuntimeError(f"save_pretrained wrote no {_MARKER} in {staging}")
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    log.info("saved the trained %s into %s", type(pipeline).__name__, target)
