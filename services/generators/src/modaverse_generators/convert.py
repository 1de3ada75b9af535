"""Proto ↔ domain conversion for the generator service (unit-tested on its own)."""

from __future__ import annotations

from collections.abc import Iterator

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.media import MediaKind

from .base import GeneratedMedia, GenerationRequest, GeneratorInfo, Progress

CHUNK_BYTES = 1 << 20  # the contract's largest Chunk

MODALITY_FOR_KIND = {
    MediaKind.IMAGE: common_pb2.MODALITY_IMAGE,
    MediaKind.VIDEO: common_pb2.MODALITY_VIDEO,
    MediaKind.AUDIO: common_pb2.MODALITY_AUDIO,
}


def generation_request(request: generator_pb2.GenerateRequest) -> GenerationRequest:
    return GenerationRequest(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=request.seed if request.HasField("seed") else None,
        steps=request.steps if request.HasField("steps") else None,
        guidance_scale=request.guidance_scale if request.HasField("guidance_scale") else None,
        width=request.width if request.HasField("width") else None,
        height=request.height if request.HasField("height") else None,
        num_frames=request.num_frames if request.HasField("num_frames") else None,
        fps=request.fps if request.HasField("fps") else None,
        duration_s=request.duration_seconds if request.HasField("duration_seconds") else None,
        mime_type=request.output_mime_type,
        options=dict(request.options),
    )


def progress_response(event: Progress) -> generator_pb2.GenerateResponse:
    return generator_pb2.GenerateResponse(
        progress=generator_pb2.Progress(step=event.step, total_steps=event.total_steps)
    )


def media_responses(media: GeneratedMedia, chunk_bytes: int = CHUNK_BYTES) -> Iterator[generator_pb2.GenerateResponse]:
    """The file in Chunks of at most ``chunk_bytes`` (contiguous offsets), then Done."""
    total = len(media.data)
    view = memoryview(media.data)
    for offset in range(0, total, chunk_bytes):
        chunk = generator_pb2.Chunk(
            mime_type=media.mime_type, data=bytes(view[offset : offset + chunk_bytes]), offset=offset, total_bytes=total
        )
        yield generator_pb2.GenerateResponse(chunk=chunk)
    done = generator_pb2.Done(
        seed=media.seed,
        elapsed_seconds=media.elapsed_s,
        queue_seconds=media.queue_s,
        mime_type=media.mime_type,
        total_bytes=total,
        width=media.width,
        height=media.height,
        num_frames=media.num_frames,
        duration_seconds=media.duration_s,
    )
    yield generator_pb2.GenerateResponse(done=done)


def info_response(info: GeneratorInfo) -> generator_pb2.InfoResponse:
    lim = info.limits
    return generator_pb2.InfoResponse(
        modality=MODALITY_FOR_KIND[info.modality],
        kind=info.kind,
        model=info.model,
        mime_types=list(info.mime_types),
        limits=generator_pb2.ParamLimits(
            default_steps=lim.default_steps,
            max_steps=lim.max_steps,
            default_guidance_scale=lim.default_guidance_scale,
            default_width=lim.default_width,
            default_height=lim.default_height,
            max_width=lim.max_width,
            max_height=lim.max_height,
            default_num_frames=lim.default_num_frames,
            max_num_frames=lim.max_num_frames,
            default_fps=lim.default_fps,
            default_duration_seconds=lim.default_duration_s,
            max_duration_seconds=lim.max_duration_s,
            max_prompt_chars=lim.max_prompt_chars,
        ),
        options=list(info.options),
        queue_capacity=info.queue_capacity,
        max_batch_size=info.max_batch_size,
        profile=info.profile,
        device=info.device,
    )
