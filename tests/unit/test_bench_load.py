"""bench/load.py's accounting: every failure tallied by service, status and message; lost outputs; soak RSS."""

from __future__ import annotations

import grpc

from bench.load import ADMISSION, Failures, normalise, soak_report
from modaverse.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from modaverse.types import ChatResult, Done, Invocation, InvocationError, MetaResponse

SHED = "the gateway is at its limit of 32 concurrent chats and generations; retry shortly"


def chat_result(*errors: InvocationError) -> ChatResult:
    invocations = [Invocation(0, "image", "a red circle", "image-tiny"), Invocation(1, "audio", "a beep", "")]
    meta = MetaResponse("…", "Here you go.", invocations, True)
    return ChatResult("Here you go.", meta, [], list(errors), Done(10, 5, 1.0, len(errors)))


def test_numbers_are_normalised_so_one_failure_of_many_chats_is_one_row() -> None:
    assert normalise("failed to connect to 127.0.0.1:45123 after 3.5s") == "failed to connect to N:N after Ns"
    assert len(normalise("x" * 500)) == 90


def test_rpc_errors_are_tallied_by_the_service_the_gateway_names() -> None:
    failures = Failures()
    failures.rpc_error(ResourceExhausted(grpc.StatusCode.RESOURCE_EXHAUSTED, SHED))
    failures.rpc_error(ResourceExhausted(grpc.StatusCode.RESOURCE_EXHAUSTED, SHED))
    failures.rpc_error(Unavailable(grpc.StatusCode.UNAVAILABLE, "llm: Stream removed (Socket closed)"))
    failures.rpc_error(Unavailable(grpc.StatusCode.UNAVAILABLE, "encoder: connect to 127.0.0.1:4001 failed"))
    failures.rpc_error(Unavailable(grpc.StatusCode.UNAVAILABLE, "encoder: connect to 127.0.0.1:4002 failed"))
    failures.rpc_error(DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert failures.rows() == [
        [
            ADMISSION,
            "RESOURCE_EXHAUSTED",
            "the gateway is at its limit of N concurrent chats and generations; retry shortly",
            2,
        ],
        ["encoder", "UNAVAILABLE", "connect to N:N failed", 2],
        ["gateway", "DEADLINE_EXCEEDED", "Deadline Exceeded", 1],
        ["llm", "UNAVAILABLE", "Stream removed (Socket closed)", 1],
    ]
    # A shed chat was never admitted (the client asks again); every other error lost an admitted chat's answer.
    assert failures.lost_outputs == 4 and failures.lost_generations == 0


def test_a_lost_generation_is_tallied_under_its_generator_and_counts_as_a_lost_output() -> None:
    failures = Failures()
    assert failures.result(chat_result()) is True
    assert failures.rows() == [] and failures.lost_outputs == 0
    named = InvocationError(0, "UNAVAILABLE", "generator image-tiny: Socket closed")
    unnamed = InvocationError(1, "RESOURCE_EXHAUSTED", "queue full (16 waiting)")  # attributed by its invocation
    assert failures.result(chat_result(named, unnamed)) is False
    assert failures.result(chat_result(named)) is False
    assert failures.rows() == [
        ["generator image-tiny", "UNAVAILABLE", "Socket closed", 2],
        ["generator audio", "RESOURCE_EXHAUSTED", "queue full (N waiting)", 1],
    ]
    assert failures.lost_outputs == 2 and failures.lost_generations == 2


def test_soak_growth_is_measured_from_the_first_sample_after_the_warm_up_to_the_end() -> None:
    series = [
        (0.0, {"gateway": 50.0, "llm": 400.0}),  # still warming up: not the baseline
        (60.0, {"gateway": 55.0, "llm": 440.0}),
        (120.0, {"gateway": 60.0, "llm": 450.0}),
        (600.0, {"gateway": 65.0, "llm": 460.0}),
    ]
    base_t, end_t, rows, met = soak_report(series, warmup=100.0)
    assert (base_t, end_t) == (120.0, 600.0)
    assert rows == [["gateway", 60.0, 65.0, "+8.3"], ["llm", 450.0, 460.0, "+2.2"]]
    assert met
    series[-1][1]["gateway"] = 66.0  # +10%
    assert not soak_report(series, warmup=100.0)[3]
