"""Proto ↔ domain conversion, alone (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modaverse_llm import convert
from modaverse_llm.types import AdapterInfo, BackendInfo, Completion, Delta, FinishReason, MediaRows, Role
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.llm.v1 import llm_pb2
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.tensors import from_numpy, from_torch

H = 8


def block(array: np.ndarray, modality: int = common_pb2.MODALITY_IMAGE) -> llm_pb2.Segment:
    return llm_pb2.Segment(embeddings=llm_pb2.EmbeddingBlock(modality=modality, rows=from_numpy(array)))  # type: ignore[arg-type]


def request(*segments: llm_pb2.Segment, **kw: object) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, segments=list(segments))],
        **kw,  # type: ignore[arg-type]
    )


def test_messages_text_and_media_in_order() -> None:
    rows = np.arange(2 * H, dtype=np.float32).reshape(2, H)
    req = llm_pb2.GenerateRequest(
        messages=[
            llm_pb2.Message(role=llm_pb2.ROLE_USER, segments=[llm_pb2.Segment(text="hi")]),
            llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, segments=[llm_pb2.Segment(text="yo")]),
            llm_pb2.Message(
                role=llm_pb2.ROLE_USER,
                segments=[block(rows), llm_pb2.Segment(text="and"), block(rows[:1], common_pb2.MODALITY_AUDIO)],
            ),
        ],
        adapter=" default ",
    )
    out = convert.generation_request(req, H, torch.float16, 4)
    assert [m.role for m in out.messages] == [Role.USER, Role.ASSISTANT, Role.USER]
    first, text, second = out.messages[2].segments
    assert isinstance(first, MediaRows) and isinstance(second, MediaRows) and text == "and"
    assert first.modality == "image" and second.modality == "audio"
    assert first.rows.dtype == torch.float16 and torch.equal(first.rows.float(), torch.from_numpy(rows))
    assert out.adapter == "default"


def test_bfloat16_rows_are_accepted() -> None:
    rows = torch.randn(1, H, dtype=torch.bfloat16)
    seg = llm_pb2.Segment(embeddings=llm_pb2.EmbeddingBlock(modality=common_pb2.MODALITY_VIDEO, rows=from_torch(rows)))
    (message,) = convert.messages(request(seg), H, torch.float32, 4)
    media = message.segments[0]
    assert isinstance(media, MediaRows) and torch.equal(media.rows, rows.float())


def test_sampling_defaults_and_overrides() -> None:
    d = convert.sampling(llm_pb2.SamplingParams())
    assert (d.max_tokens, d.temperature, d.top_p, d.top_k, d.seed, d.stop) == (246, 1.0, 0.01, 0, None, ("###",))
    p = convert.sampling(
        llm_pb2.SamplingParams(max_tokens=5, temperature=0.0, top_p=0.5, top_k=3, seed=9, stop=["a", "b"])
    )
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.seed, p.stop) == (5, 0.0, 0.5, 3, 9, ("a", "b"))
    back = convert.sampling(convert.sampling_proto(p))
    assert back == p


def bad(rows: np.ndarray | None = None, **kw: object) -> llm_pb2.Segment:
    tensor = from_numpy(rows if rows is not None else np.zeros((1, H), np.float32))
    for k, v in kw.items():
        if k == "shape":
            del tensor.shape[:]
            tensor.shape.extend(v)  # type: ignore[arg-type]
        else:
            setattr(tensor, k, v)
    return llm_pb2.Segment(embeddings=llm_pb2.EmbeddingBlock(modality=common_pb2.MODALITY_IMAGE, rows=tensor))


@pytest.mark.parametrize(
    ("segment", "match"),
    [
        (bad(np.zeros((1, H + 1), np.float32)), "hidden size is 8"),
        (bad(np.zeros((1, 1, H), np.float32)), "must have shape"),
        (bad(np.zeros(H, np.float32)), "must have shape"),
        (bad(np.zeros((0, H), np.float32)), "1 to 4 rows"),
        (bad(np.zeros((5, H), np.float32)), "1 to 4 rows"),
        (bad(np.full((1, H), np.nan, np.float32)), "NaN or Inf"),
        (bad(np.full((1, H), np.inf, np.float32)), "NaN or Inf"),
        (bad(np.full((1, H), 1e6, np.float32), dtype=common_pb2.DTYPE_FLOAT32), None),
        (bad(dtype=common_pb2.DTYPE_UNSPECIFIED), "not supported"),
        (bad(shape=[2, H]), "needs 64 bytes"),
        (block(np.zeros((1, H), np.float32), common_pb2.MODALITY_TEXT), "IMAGE, VIDEO or AUDIO"),
        (llm_pb2.Segment(embeddings=llm_pb2.EmbeddingBlock(modality=common_pb2.MODALITY_IMAGE)), "rows is missing"),
        (llm_pb2.Segment(), "needs text or embeddings"),
    ],
)
def test_bad_segments(segment: llm_pb2.Segment, match: str | None) -> None:
    if match is None:
        convert.messages(request(segment), H, torch.float32, 4)
        return
    with pytest.raises(InvalidArgument, match=match) as info:
        convert.messages(request(segment), H, torch.float32, 4)
    assert info.value.message.startswith("messages[0].segments[0]")


def test_overflow_into_half_precision_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="overflow"):
        convert.messages(request(bad(np.full((1, H), 1e6, np.float32))), H, torch.float16, 4)


def test_unspecified_role_is_rejected() -> None:
    req = llm_pb2.GenerateRequest(messages=[llm_pb2.Message(segments=[llm_pb2.Segment(text="x")])])
    with pytest.raises(InvalidArgument, match="role"):
        convert.messages(req, H, torch.float32, 4)


def test_events_and_info() -> None:
    assert convert.event_response(Delta("ab")).delta == "ab"
    final = convert.event_response(Completion("t", 5, 3, FinishReason.LENGTH, 2)).final
    assert (final.text, final.prompt_tokens, final.completion_tokens, final.truncated_messages) == ("t", 5, 3, 2)
    assert final.finish_reason == common_pb2.FINISH_REASON_LENGTH
    info = BackendInfo("m", "transformers", 256, torch.float32, 1024, (AdapterInfo("a", "/p", 32, True),), 8)
    reply = convert.info_response(info, "tiny")
    assert (reply.hidden_size, reply.dtype, reply.context_length, reply.max_batch_size) == (
        256,
        common_pb2.DTYPE_FLOAT32,
        1024,
        8,
    )
    assert reply.adapters[0].is_default and reply.adapters[0].rank == 32
    assert reply.default_sampling.max_tokens == 246 and list(reply.default_sampling.stop) == ["###"]
