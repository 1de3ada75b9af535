"""Proto ↔ domain conversion: optional fields, chunking, Info."""

from __future__ import annotations

import pytest

from modaverse_generators import convert
from modaverse_generators.base import GeneratedMedia, GeneratorInfo, InputImage, Progress
from modaverse_generators.video import TextToVideo
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import MediaKind


def test_unset_optionals_stay_none_and_zero_values_survive() -> None:
    empty = convert.generation_request(generator_pb2.GenerateRequest(prompt="p"))
    assert empty.seed is None and dict(empty.params) == {}  # every parameter takes its default
    zeros = convert.generation_request(
        generator_pb2.GenerateRequest(
            prompt="p", seed=0, steps=0, guidance_scale=0.0, width=0, height=0, num_frames=0, fps=0,
            duration_seconds=0.0, output_mime_type="video/webm", options={"eta": "0"}, negative_prompt="n",
        )
    )  # fmt: skip
    p = zeros.params
    assert (zeros.seed, p["steps"], p["guidance_scale"], p["width"], p["height"]) == (0, 0, 0.0, 0, 0)
    assert (p["num_frames"], p["fps"], p["duration_seconds"]) == (0, 0, 0.0)
    assert (zeros.mime_type, dict(zeros.options), zeros.negative_prompt) == ("video/webm", {"eta": "0"}, "n")


def test_fields_and_params_make_one_map_and_a_parameter_is_given_once() -> None:
    request = convert.generation_request(
        generator_pb2.GenerateRequest(prompt="p", width=64, params={"strength": 0.5, "height": 32})
    )
    assert dict(request.params) == {"width": 64, "strength": 0.5, "height": 32}
    with pytest.raises(InvalidArgument, match=r"width is given twice \(as a field and in params\)"):
        convert.generation_request(generator_pb2.GenerateRequest(prompt="p", width=64, params={"width": 64}))


def test_media_is_chunked_with_contiguous_offsets_then_done() -> None:
    data = bytes(range(256)) * 10  # 2560 bytes
    media = GeneratedMedia("video/mp4", data, 9, 1.5, 0.25, width=32, height=16, num_frames=4, duration_s=0.4)
    responses = list(convert.media_responses(media, chunk_bytes=1000))
    chunks = [r.chunk for r in responses[:-1]]
    assert [len(c.data) for c in chunks] == [1000, 1000, 560]
    assert [c.offset for c in chunks] == [0, 1000, 2000]
    assert {c.total_bytes for c in chunks} == {2560} and {c.mime_type for c in chunks} == {"video/mp4"}
    assert b"".join(c.data for c in chunks) == data
    done = responses[-1].done
    assert (done.seed, done.total_bytes, done.width, done.height, done.num_frames) == (9, 2560, 32, 16, 4)
    assert done.elapsed_seconds == 1.5 and done.queue_seconds == 0.25


def test_default_chunks_are_one_mib() -> None:
    media = GeneratedMedia("audio/wav", b"x" * ((1 << 20) + 1), 1, 0.0, 0.0)
    sizes = [len(r.chunk.data) for r in convert.media_responses(media) if r.WhichOneof("event") == "chunk"]
    assert sizes == [1 << 20, 1]


def test_empty_media_gives_only_done() -> None:
    responses = list(convert.media_responses(GeneratedMedia("image/png", b"", 1, 0.0, 0.0)))
    assert [r.WhichOneof("event") for r in responses] == ["done"]


def test_progress_and_info() -> None:
    progress = convert.progress_response(Progress(step=3, total_steps=25)).progress
    assert (progress.step, progress.total_steps) == (3, 25)
    spec = TextToVideo.spec.for_profile("full")
    info = GeneratorInfo(
        modality=MediaKind.VIDEO,
        kind="text-to-video",
        model="damo-vilab/text-to-video-ms-1.7b",
        mime_types=("video/mp4", "video/webm"),
        params=spec.params,
        options=spec.options,
        max_prompt_chars=2000,
        takes_image=False,
        queue_capacity=16,
        max_batch_size=4,
        profile="full",
        device="cuda:0",
    )
    reply = convert.info_response(info)
    assert reply.modality == common_pb2.MODALITY_VIDEO
    params = {p.name: p for p in reply.params}
    assert (params["steps"].default_value, params["fps"].default_value, params["num_frames"].default_value) == (
        25, 10, 16,
    )  # fmt: skip
    assert (reply.queue_capacity, reply.max_batch_size, reply.device, list(reply.options)) == (16, 4, "cuda:0", ["eta"])
    width, eta = params["width"], params["eta"]
    assert (width.integer, width.minimum, width.maximum, width.multiple_of) == (True, 8, 576, 8)
    assert not eta.HasField("default_value") and (eta.minimum, eta.maximum, eta.integer) == (0, 1, False)
    assert reply.max_prompt_chars == 2000 and list(params) == [p.name for p in spec.params]
    assert not reply.takes_image


def test_the_input_image_is_carried_as_bytes() -> None:
    image = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, mime_type="image/png", data=b"\x89PNG")
    request = convert.generation_request(generator_pb2.GenerateRequest(prompt="p", image=image))
    assert request.image == InputImage(b"\x89PNG", "image/png")
    assert convert.generation_request(generator_pb2.GenerateRequest(prompt="p")).image is None
    for bad, message in [
        (common_pb2.Media(uri="https://x/cat.png"), "image has no data"),
        (common_pb2.Media(data=b""), "image has no data"),
        (common_pb2.Media(modality=common_pb2.MODALITY_AUDIO, data=b"RIFF"), "image has modality 4"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            convert.generation_request(generator_pb2.GenerateRequest(prompt="p", image=bad))
