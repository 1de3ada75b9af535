"""Per-token logprobs without a model: validation, proto mapping, the engine's per-position math."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from modaverse_llm import convert
from modaverse_llm.engine import position_logprobs
from modaverse_llm.sampling import validate_sampling
from modaverse_llm.types import Completion, Delta, FinishReason, PositionLogprobs, SamplingParams, TokenLogprob
from modaverse_protos.llm.v1 import llm_pb2
from modaverse_runtime.errors import InvalidArgument

OK = SamplingParams()


def names(ids: list[int]) -> list[str]:
    return [f"t{i}" for i in ids]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"top_logprobs": 3}, r"top_logprobs needs sampling\.logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, r"top_logprobs must be in \[0, 20\], got 21"),
        ({"logprobs": True, "top_logprobs": -1}, r"top_logprobs must be in \[0, 20\]"),
    ],
)
def test_bad_logprobs_requests_are_rejected(change: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validate_sampling(replace(OK, **change), 2048, 8, 64)  # type: ignore[arg-type]


@pytest.mark.parametrize(("logprobs", "top"), [(False, 0), (True, 0), (True, 1), (True, 20)])
def test_good_logprobs_requests_pass(logprobs: bool, top: int) -> None:
    validate_sampling(replace(OK, logprobs=logprobs, top_logprobs=top), 2048, 8, 64)


def test_sampling_fields_round_trip_through_the_proto() -> None:
    p = convert.sampling(llm_pb2.SamplingParams(top_p=0.5, logprobs=True, top_logprobs=7))
    assert (p.logprobs, p.top_logprobs) == (True, 7)
    assert convert.sampling(convert.sampling_proto(p)) == p
    d = convert.sampling(llm_pb2.SamplingParams())
    assert (d.logprobs, d.top_logprobs) == (False, 0)


def entry(i: int, lp: float) -> TokenLogprob:
    return TokenLogprob(i, f"t{i}", lp)


def test_events_carry_their_entries_in_order() -> None:
    a = PositionLogprobs(entry(3, -0.5), (entry(3, -0.5), entry(1, -1.5)))
    b = PositionLogprobs(entry(9, -2.25))
    reply = convert.event_response(Delta("", (a, b)))
    assert reply.WhichOneof("event") == "delta" and reply.delta == ""
    assert [(e.chosen.token_id, e.chosen.token, e.chosen.logprob) for e in reply.logprobs] == [
        (3, "t3", -0.5),
        (9, "t9", -2.25),
    ]
    assert [(t.token_id, t.logprob) for t in reply.logprobs[0].top] == [(3, -0.5), (1, -1.5)]
    assert not reply.logprobs[1].top
    final = convert.event_response(Completion("x", 4, 2, FinishReason.STOP, 0, (b,)))
    assert final.WhichOneof("event") == "final" and [e.chosen.token_id for e in final.logprobs] == [9]
    # Without logprobs nothing is added (and the defaults keep old constructions valid).
    assert not convert.event_response(Delta("ab")).logprobs
    assert not convert.event_response(Completion("t", 5, 3, FinishReason.LENGTH, 2)).logprobs


def test_position_logprobs_are_the_raw_log_softmax() -> None:
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0, 1.0])
    want = torch.log_softmax(logits.double(), -1)
    got = position_logprobs(logits, 3, 3, names)
    assert (got.chosen.token_id, got.chosen.token) == (3, "t3")
    assert math.isclose(got.chosen.logprob, float(want[3]), abs_tol=1e-6)
    assert [t.token_id for t in got.top] == [1, 2, 4]
    assert [t.token for t in got.top] == ["t1", "t2", "t4"]
    for t in got.top:
        assert math.isclose(t.logprob, float(want[t.token_id]), abs_tol=1e-6)
    assert got.top[0].logprob > got.top[1].logprob > got.top[2].logprob
    # Only the chosen token when no alternatives are asked for; more than the vocabulary is capped.
    assert position_logprobs(logits, 0, 0, names).top == ()
    assert len(position_logprobs(logits, 0, 20, names).top) == 5
    # The input is not changed (the sampler reads the same tensor).
    assert torch.equal(logits, torch.tensor([0.0, 3.0, 2.9, -1.0, 1.0]))


def test_unknown_token_strings_become_empty() -> None:
    got = position_logprobs(torch.zeros(3), 2, 1, lambda ids: [None for _ in ids])  # type: ignore[misc]
    assert got.chosen.token == "" and got.top[0].token == ""
