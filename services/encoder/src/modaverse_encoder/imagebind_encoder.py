"""The ImageBind encoder: decode → ImageBind transforms → micro-batched forward → adaptor.

Decoding and transforms run on a small thread pool (one item each); the model runs on
one dedicated thread, one forward pass per batch per input kind (images, videos and
audio have different tensor shapes, so each kind has its own batcher).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from modaverse_runtime.batching import MicroBatcher
from modaverse_runtime.devices import resolve_device, resolve_dtype
from modaverse_runtime.errors import FailedPrecondition, InvalidArgument
from modaverse_runtime.media import MediaKind
from modaverse_runtime.media.decode import DecodedAudio, DecodedImage, DecodedVideo, decode_media

from .adaptor import Adaptor
from .architectures import BRANCH_FOR_KIND, architecture_kwargs
from .artifacts import EncoderArtifacts, resolve_artifacts
from .base import EncodedItem, Encoder, EncoderInfo, MediaInput
from .checkpoint import load_imagebind
from .identity import encoder_id
from .settings import EncoderSettings
from .transforms import audio_to_clips, image_to_tensor, video_to_clips

log = logging.getLogger(__name__)


class ImageBindEncoder(Encoder):
    def __init__(self, settings: EncoderSettings) -> None:
        super().__init__(settings)
        self.artifacts: EncoderArtifacts | None = None
        self.encoder_id = ""
        self._limits = settings.media_limits
        self._model: torch.nn.Module | None = None
        self._adaptor: Adaptor | None = None
        self._device = torch.device("cpu")
        self._dtype = torch.float32
        self._preprocess_pool = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="preprocess")
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="encoder-model")
        self._batchers: dict[MediaKind, MicroBatcher[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}

    def describe(self) -> str:
        if self.artifacts is None:
            return "imagebind (not loaded)"
        return f"{self.artifacts.arch} ({self.artifacts.checkpoint})"

    # --- lifecycle -------------------------------------------------------------------
    def _load(self) -> None:
        self.artifacts = artifacts = resolve_artifacts(self.settings)
        self._device = resolve_device(self.settings.device)
        self._dtype = resolve_dtype(self.settings.dtype, self._device)
        self._model = load_imagebind(
            artifacts.checkpoint,
            artifacts.arch,
            set(BRANCH_FOR_KIND.values()),
            overrides=artifacts.arch_overrides,
            device=self._device,
            dtype=self._dtype,
        )
        adaptor = Adaptor.load(artifacts.adaptor_dir, device=self._device).to(self._dtype).eval()
        embed_dim = self._embed_dim(artifacts)
        if adaptor.config.in_dim != embed_dim:
            raise FailedPrecondition(
                f"adaptor in_dim {adaptor.config.in_dim} does not match ImageBind output size {embed_dim}"
            )
        self._adaptor = adaptor
        self.encoder_id = encoder_id(artifacts, self.settings, self._dtype, self._device)
        batching = self.settings.batching
        for kind in (MediaKind.IMAGE, MediaKind.VIDEO, MediaKind.AUDIO):
            self._batchers[kind] = MicroBatcher(
                f"encoder-{kind.value}",
                functools.partial(self.forward, kind),
                executor=self._model_thread,
                max_items=self.settings.batch_max_items if batching else 1,
                max_wait_ms=self.settings.batch_max_wait_ms if batching else 0.0,
                max_queue=self.settings.max_queue,
            )

    @staticmethod
    def _embed_dim(artifacts: EncoderArtifacts) -> int:
        return int(architecture_kwargs(artifacts.arch, artifacts.arch_overrides)["out_embed_dim"])

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()

    def _unload(self) -> None:
        self._model = None
        self._adaptor = None
        self._preprocess_pool.shutdown(wait=False, cancel_futures=True)
        self._model_thread.shutdown(wait=False, cancel_futures=True)
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def info(self) -> EncoderInfo:
        self.require_ready()
        assert self.artifacts is not None and self._adaptor is not None
        cfg = self._adaptor.config
        return EncoderInfo(
            encoder_model=self.artifacts.arch,
            adaptor=str(self.artifacts.adaptor_dir),
            adaptor_mode=cfg.mode,
            embed_dim=self._embed_dim(self.artifacts),
            hidden_size=cfg.out_dim,
            rows_per_item=cfg.rows,
            dtype=self._dtype,
            device=str(self._device),
            encoder_id=self.encoder_id,
        )

    # --- work ------------------------------------------------------------------------
    def preprocess(self, item: MediaInput) -> torch.Tensor:
        """Bytes → the ImageBind input tensor for one item (runs on the preprocess pool)."""
        decoded = decode_media(item.kind, item.data, item.mime_type, self._limits)
        s = self.settings
        if isinstance(decoded, DecodedImage):
            return image_to_tensor(decoded.image)
        if isinstance(decoded, DecodedAudio):
            return audio_to_clips(decoded.samples, decoded.sample_rate, clips_per_item=s.audio_clips)
        if isinstance(decoded, DecodedVideo):
            return video_to_clips(decoded, clips_per_item=s.video_clips, spatial_crops=s.video_spatial_crops)
        raise InvalidArgument(f"cannot encode media of kind {item.kind}")

    @torch.inference_mode()
    def forward(self, kind: MediaKind, batch: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One forward pass for preprocessed items of one kind: (ImageBind vector, adaptor rows) each."""
        assert self._model is not None and self._adaptor is not None
        branch = BRANCH_FOR_KIND[kind.value]
        x = torch.stack(list(batch)).to(device=self._device, dtype=self._dtype, non_blocking=True)
        vectors = self._model({branch: x})[branch]
        rows = self._adaptor(kind.value, vectors)
        vectors_cpu = vectors.float().cpu()
        rows_cpu = rows.cpu()
        return [(vectors_cpu[i], rows_cpu[i]) for i in range(len(batch))]

    async def _encode_one(self, index: int, item: MediaInput) -> EncodedItem:
        loop = asyncio.get_running_loop()
        with self._batchers[item.kind].expecting() as ticket:
            try:
                tensor = await loop.run_in_executor(self._preprocess_pool, self.preprocess, item)
            except InvalidArgument as exc:
                raise InvalidArgument(f"media[{index}] ({item.kind.value}): {exc.message}") from exc
            vector, rows = await ticket.submit(tensor)
        return EncodedItem(kind=item.kind, imagebind=vector, projected=rows)

    async def encode(self, items: Sequence[MediaInput]) -> list[EncodedItem]:
        self.require_ready()
        if not items:
            raise InvalidArgument("no media items to encode")
        if len(items) > self.settings.max_items_per_request:
            raise InvalidArgument(
                f"{len(items)} media items in one request; the limit is {self.settings.max_items_per_request}"
            )
        tasks = [asyncio.ensure_future(self._encode_one(i, item)) for i, item in enumerate(items)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
