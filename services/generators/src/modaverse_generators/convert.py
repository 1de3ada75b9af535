"""Proto ↔ domain conversion for the generator service (unit-tested on its own)."""

from __future__ import annotations

from collections.abc import Iterator

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import MediaKind

from .base import GeneratedMedia, GenerationRequest, GeneratorInfo, InputImage, Progress
from .params import FIELD_PARAMS, ParamSpec

CHUNK_BYTES = 1 << 20  # the contract's largest Chunk

MODALITY_FOR_KIND = {
    MediaKind.IMAGE: common_pb2.MODALITY_IMAGE,
    MediaKind.VIDEO: common_pb2.MODALITY_VIDEO,
    MediaKind.AUDIO: common_pb2.MODALITY_AUDIO,
}


def generation_request(request: generator_pb2.GenerateRequest) -> GenerationRequest:
    """The request's parameters in one map: its fields (unset ones left out) and ``params``."""
    params: dict[str, float] = {
        field.name: value for field, value in request.ListFields() if field.name in FIELD_PARAMS
    }  # set fields only (each has presence), zeros included
    for name, value in request.params.items():
        if name in params:
            raise InvalidArgument(f"{name} is given twice (as a field and in params); send it once")
        params[name] = value
    return GenerationRequest(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=request.seed if request.HasField("seed") else None,
        params=params,
        options=dict(request.options),
        mime_type=request.output_mime_type,
        image=_input_image(request.image) if request.HasField("image") else None,
    )


def _input_image(media: common_pb2.Media) -> InputImage:
    if media.WhichOneof("source") != "data" or not media.data:
        raise InvalidArgument("image has no data: send the image bytes in 'image.data' (uri sources are not fetched)")
    if media.modality not in (common_pb2.MODALITY_UNSPECIFIED, common_pb2.MODALITY_IMAGE):
        raise InvalidArgument(f"image has modality {media.modality}, not MODALITY_IMAGE; send an image")
    return InputImage(media.data, media.mime_type)


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


def param_spec(param: ParamSpec) -> generator_pb2.ParamSpec:
    out = generator_pb2.ParamSpec(
        name=param.name,
        integer=param.integer,
        minimum=param.minimum,
        maximum=param.maximum,
        exclusive_minimum=param.exclusive_minimum,
        multiple_of=param.multiple_of,
    )
    if param.default is not None:
        out.default_value = param.default
    return out


def info_response(info: GeneratorInfo) -> generator_pb2.InfoResponse:
    return generator_pb2.InfoResponse(
        modality=MODALITY_FOR_KIND[info.modality],
        kind=info.kind,
        model=info.model,
        mime_types=list(info.mime_types),
        params=[param_spec(p) for p in info.params],
        max_prompt_chars=info.max_prompt_chars,
        takes_image=info.takes_image,
        options=list(info.options),
        queue_capacity=info.queue_capacity,
        max_batch_size=info.max_batch_size,
        profile=info.profile,
        device=info.device,
    )
