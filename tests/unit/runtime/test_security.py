from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime.errors import FailedPrecondition, ResourceExhausted, Unauthenticated
from modaverse_runtime.security import RateLimiter, RequestGuard, load_tokens
from modaverse_runtime.settings import ServerSettings

from .test_server import make_server

TOKEN_A = "a" * 24
TOKEN_B = "b" * 24


def test_load_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# clients\nalice:{TOKEN_A}\n\nbob:{TOKEN_B}\n")
    assert load_tokens(path) == {TOKEN_A: "alice", TOKEN_B: "bob"}
    path.write_text("alice:short\n")
    with pytest.raises(FailedPrecondition, match=":1: expected"):
        load_tokens(path)
    path.write_text("# nothing\n")
    with pytest.raises(FailedPrecondition, match="no tokens"):
        load_tokens(path)


def test_guard_identifies_clients_and_leaves_probes_open() -> None:
    guard = RequestGuard({TOKEN_A: "alice", TOKEN_B: "bob"})
    assert guard.check("/x.Y/Z", {"authorization": f"Bearer {TOKEN_B}"}, "ipv4:1.2.3.4:5") == "bob"
    for metadata in (
        {},
        {"authorization": TOKEN_A},
        {"authorization": f"Bearer {TOKEN_A}x"},
        {"authorization": "Basic x"},
    ):
        with pytest.raises(Unauthenticated):
            guard.check("/x.Y/Z", metadata, "peer")
    assert guard.check("/grpc.health.v1.Health/Check", {}, "peer") == "peer"


def test_rate_limiter_allows_a_burst_then_refuses() -> None:
    limiter = RateLimiter(rate=0.001, burst=3)
    assert [limiter.allow("c") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("other")  # buckets are per client
    guard = RequestGuard(None, RateLimiter(rate=0.001, burst=1))
    guard.check("/x.Y/Z", {}, "peer-1")
    with pytest.raises(ResourceExhausted, match="rate limit"):
        guard.check("/x.Y/Z", {}, "peer-1")


async def test_server_requires_a_token_and_limits_rate(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{TOKEN_A}\n")
    loaded = asyncio.Event()
    loaded.set()
    settings = ServerSettings(
        host="127.0.0.1", port=0, auth_tokens_file=tokens, rate_limit_rps=0.001, rate_limit_burst=2
    )
    server, _ = make_server(loaded, settings=settings)
    port = await server.start()
    await server.wait_ready(5)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as info:
                await stub.Encode(encoder_pb2.EncodeRequest())
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            auth = (("authorization", f"Bearer {TOKEN_A}"),)
            await stub.Encode(encoder_pb2.EncodeRequest(), metadata=auth)
            await stub.Encode(encoder_pb2.EncodeRequest(), metadata=auth)
            with pytest.raises(aio.AioRpcError) as info:
                await stub.Encode(encoder_pb2.EncodeRequest(), metadata=auth)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token
    finally:
        await server.stop(0)
