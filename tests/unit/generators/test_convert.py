"""Proto ↔ domain conversion: optional fields, chunking, Info."""

from __future__ import annotations

from modaverse_generators import convert
from modaverse_generators.base import GeneratedMedia, GeneratorInfo, Progress
from modaverse_generators.video import TextToVideo
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.media import MediaKind


def test_unset_optionals_stay_none_and_zero_values_survive() -> None:
    empty = convert.generation_request(generator_pb2.GenerateRequest(prompt="p"))
    assert (empty.seed, empty.steps, empty.guidance_scale, empty.width, empty.duration_s) == (None,) * 5
    zeros = convert.generation_request(
        generator_pb2.GenerateRequest(
            prompt="p", seed=0, steps=0, guidance_scale=0.0, width=0, height=0, num_frames=0, fps=0,
            duration_seconds=0.0, output_mime_type="video/webm", options={"eta": "0"}, negative_prompt="n",
        )
    )  # fmt: skip
    assert (zeros.seed, zeros.steps, zeros.guidance_scale, zeros.width, zeros.height) == (0, 0, 0.0, 0, 0)
    assert (zeros.num_frames, zeros.fps, zeros.duration_s) == (0, 0, 0.0)
    assert (zeros.mime_type, dict(zeros.options), zeros.negative_prompt) == ("video/webm", {"eta": "0"}, "n")


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
    info = GeneratorInfo(
        modality=MediaKind.VIDEO,
        kind="text-to-video",
        model="damo-vilab/text-to-video-ms-1.7b",
        mime_types=("video/mp4", "video/webm"),
        limits=TextToVideo.full_limits,
        options=("eta",),
        queue_capacity=16,
        max_batch_size=4,
        profile="full",
        device="cuda:0",
    )
    reply = convert.info_response(info)
    assert reply.modality == common_pb2.MODALITY_VIDEO
    assert (reply.limits.default_steps, reply.limits.default_fps, reply.limits.default_num_frames) == (25, 10, 16)
    assert (reply.queue_capacity, reply.max_batch_size, reply.device, list(reply.options)) == (16, 4, "cuda:0", ["eta"])
