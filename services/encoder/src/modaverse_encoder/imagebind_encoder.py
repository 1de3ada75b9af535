"""The ImageBind encoder: decode → ImageBind transforms → micro-batched forward → adaptor.

Decoding and transforms run on a small thread pool (one item each); the model runs on
one dedicated thread, one forward pass per batch per input kind (images, videos, audio
and texts have different tensor shapes and branches, so each kind has its own batcher).

Texts go through ImageBind's own tokenizer (transforms/text.py) and its text branch; they get
their ImageBind vector only: the adaptor maps media into the LLM's embedding space, and the
LLM reads text through its own tokenizer.
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
from .architectures import BRANCH_FOR_KIND, TEXT_BRANCH, architecture_kwargs
from .artifacts import EncoderArtifacts, resolve_artifacts
from .base import TEXT, EncodedItem, Encoder, EncoderInfo, EncoderInput, ItemKind, MediaInput, TextInput
from .checkpoint import load_imagebind
from .identity import encoder_id
from .settings import EncoderSettings
from .transforms import TextTokenizer, audio_to_clips, image_to_tensor, video_to_clips

log = logging.getLogger(__name__)

# One queued item: its model input, and whether the caller wants adaptor rows for it.
_Queued = tuple[torch.Tensor, bool]
_Result = tuple[torch.Tensor, torch.Tensor | None]


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
        self._tokenizer: TextTokenizer | None = None
        self._batchers: dict[str, MicroBatcher[_Queued, _Result]] = {}

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
            {*BRANCH_FOR_KIND.values(), TEXT_BRANCH},
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
        self._tokenizer = TextTokenizer()
        self.encoder_id = encoder_id(artifacts, self.settings, self._dtype, self._device)
        batching = self.settings.batching
        kinds: tuple[ItemKind, ...] = (MediaKind.IMAGE, MediaKind.VIDEO, MediaKind.AUDIO, TEXT)
        for kind in kinds:
            self._batchers[kind] = MicroBatcher(
                f"encoder-{kind}",
                functools.partial(self._run_batch, kind),
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
        self._tokenizer = None
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
            accepts_text=True,
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

    def tokenize(self, item: TextInput) -> torch.Tensor:
        """A text → ImageBind's text input, int64 (77,) (runs on the preprocess pool; needs ``load``)."""
        if not item.text.strip():
            raise InvalidArgument("the text is empty; send at least one non-blank character")
        limit = self.settings.max_text_item_chars
        if len(item.text) > limit:
            raise InvalidArgument(
                f"{len(item.text)} characters of text; the limit is {limit} (MODAVERSE_MAX_TEXT_ITEM_CHARS)"
            )
        assert self._tokenizer is not None
        return self._tokenizer(item.text)

    def _prepare(self, item: EncoderInput) -> torch.Tensor:
        return self.tokenize(item) if isinstance(item, TextInput) else self.preprocess(item)

    @torch.inference_mode()
    def forward(
        self, kind: ItemKind, batch: Sequence[torch.Tensor], project: Sequence[bool] | None = None
    ) -> list[_Result]:
        """One forward pass for prepared items of one kind: (ImageBind vector, adaptor rows or None) each.

        ``project``: per item, whether to apply the adaptor (None: every media item). Texts never get
        rows; media the caller wants no rows for skip the adaptor."""
        assert self._model is not None and self._adaptor is not None
        branch = TEXT_BRANCH if kind == TEXT else BRANCH_FOR_KIND[kind]
        x = torch.stack(list(batch))
        dtype = self._dtype if x.is_floating_point() else x.dtype  # token ids stay int64
        x = x.to(device=self._device, dtype=dtype, non_blocking=True)
        vectors = self._model({branch: x})[branch]
        wanted = [] if kind == TEXT else [i for i in range(len(batch)) if project is None or project[i]]
        rows_cpu: dict[int, torch.Tensor] = {}
        if wanted:
            selected = vectors if len(wanted) == len(batch) else vectors[wanted]
            rows_cpu = dict(zip(wanted, self._adaptor(str(kind), selected).cpu().unbind(0), strict=True))
        vectors_cpu = vectors.float().cpu()
        return [(vectors_cpu[i], rows_cpu.get(i)) for i in range(len(batch))]

    def _run_batch(self, kind: ItemKind, batch: Sequence[_Queued]) -> list[_Result]:
        return self.forward(kind, [tensor for tensor, _ in batch], [project for _, project in batch])

    async def _encode_one(self, index: int, item: EncoderInput, project: bool) -> EncodedItem:
        loop = asyncio.get_running_loop()
        with self._batchers[item.kind].expecting() as ticket:
            try:
                tensor = await loop.run_in_executor(self._preprocess_pool, self._prepare, item)
            except InvalidArgument as exc:
                raise InvalidArgument(f"media[{index}] ({item.kind}): {exc.message}") from exc
            vector, rows = await ticket.submit((tensor, project))
        return EncodedItem(kind=item.kind, imagebind=vector, projected=rows)

    async def encode(self, items: Sequence[EncoderInput], *, project: bool = True) -> list[EncodedItem]:
        self.require_ready()
        if not items:
            raise InvalidArgument("no media items to encode")
        if len(items) > self.settings.max_items_per_request:
            raise InvalidArgument(
                f"{len(items)} media items in one request; the limit is {self.settings.max_items_per_request}"
            )
        tasks = [asyncio.ensure_future(self._encode_one(i, item, project)) for i, item in enumerate(items)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
