from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime.errors import FailedPrecondition, ResourceExhausted, Unauthenticated
from modaverse_runtime.security import RateLimiter, RequestGuard, WatchedFile, load_tokens, peer_address, read_token
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


# Rate-limit keys, bound and expiry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:[fd00::7]:51234", "fd00::7"),
        ("ipv6:%5Bfd00::7%5D:51234", "fd00::7"),  # the escaped form some gRPC versions write
        ("ipv6:[fe80::1%25eth0]:1", "fe80::1%eth0"),
        ("unix:/run/modaverse.sock", "unix:/run/modaverse.sock"),
        ("10.0.0.7", "10.0.0.7"),  # the web front door passes the bare host
        ("fd00::7", "fd00::7"),
    ],
)
def test_peer_address_drops_the_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_rate_limit_is_per_client_name_else_per_address_without_the_port() -> None:
    anonymous = RequestGuard(None, RateLimiter(rate=0.001, burst=1))
    assert anonymous.check("/x.Y/Z", {}, "ipv4:10.0.0.7:1111") == "10.0.0.7"
    with pytest.raises(ResourceExhausted):  # another connection (port) of the same host: the same bucket
        anonymous.check("/x.Y/Z", {}, "ipv4:10.0.0.7:2222")
    anonymous.check("/x.Y/Z", {}, "ipv4:10.0.0.8:1111")  # another host: its own bucket

    named = RequestGuard({TOKEN_A: "alice", TOKEN_B: "10.0.0.9"}, RateLimiter(rate=0.001, burst=1))
    alice = {"authorization": f"Bearer {TOKEN_A}"}
    assert named.check("/x.Y/Z", alice, "ipv4:10.0.0.7:1111") == "alice"
    with pytest.raises(ResourceExhausted):  # alice from another host: still alice's bucket
        named.check("/x.Y/Z", alice, "ipv4:10.0.0.8:1111")
    # A client named like an address does not share that address' bucket (nor would the address its).
    assert named.check("/x.Y/Z", {"authorization": f"Bearer {TOKEN_B}"}, "ipv4:10.0.0.9:1") == "10.0.0.9"


def test_rate_limiter_keeps_at_most_max_clients_dropping_the_least_recently_seen() -> None:
    limiter = RateLimiter(rate=0.001, burst=1, max_clients=3)
    for client in ("a", "b", "c"):
        assert limiter.allow(client, now=0.0)
    assert not limiter.allow("a", now=1.0)  # a is now the most recently seen
    assert limiter.allow("d", now=2.0)  # b goes
    assert len(limiter) == 3
    assert not limiter.allow("a", now=3.0)  # kept: still limited
    assert limiter.allow("b", now=4.0)  # dropped, so new (and c goes)
    assert not limiter.allow("d", now=5.0)
    assert len(limiter) == 3


def test_idle_buckets_are_dropped_once_they_would_be_full_again() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)  # a bucket refills in 2 s
    assert limiter.idle_s == 2.0
    assert limiter.allow("a", now=0.0) and limiter.allow("a", now=0.0)
    assert not limiter.allow("a", now=0.5)  # empty, and not forgotten while it refills
    assert limiter.allow("b", now=1.0)
    assert len(limiter) == 2
    assert limiter.allow("c", now=2.6)  # a idle for 2.1 s: dropped; b for 1.6 s: kept
    assert len(limiter) == 2
    assert limiter.allow("a", now=2.6) and limiter.allow("a", now=2.6)  # a full bucket, as before


# Tokens that rotate ------------------------------------------------------------------------------------------


def _swap(path: Path, text: str) -> None:
    """Replace ``path`` as a Kubernetes Secret volume does: a new file renamed over the old one."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    staged.replace(path)


def test_a_tokens_file_is_read_again_when_it_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"alice:{TOKEN_A}\n")
    watched = WatchedFile(path, load_tokens, check_every_s=0.0)
    guard = RequestGuard(watched)
    alice, bob = {"authorization": f"Bearer {TOKEN_A}"}, {"authorization": f"Bearer {TOKEN_B}"}
    assert guard.check("/x.Y/Z", alice, "p") == "alice"
    _swap(path, f"bob:{TOKEN_B}\n")
    assert guard.check("/x.Y/Z", bob, "p") == "bob"
    with pytest.raises(Unauthenticated):
        guard.check("/x.Y/Z", alice, "p")
    _swap(path, "bob:short\n")  # broken mid-rotation: the last good tokens stay, the error is logged once
    assert guard.check("/x.Y/Z", bob, "p") == "bob"
    assert guard.check("/x.Y/Z", bob, "p") == "bob"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "cannot be used" in errors[0].getMessage() and "short" not in errors[0].getMessage()
    path.unlink()  # gone for a moment: still the last good tokens
    assert guard.check("/x.Y/Z", bob, "p") == "bob"
    path.write_text(f"alice:{TOKEN_A}\n")
    assert guard.check("/x.Y/Z", alice, "p") == "alice"


def test_a_changed_file_is_looked_at_no_more_than_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("x" * 20)
    watched = WatchedFile(path, read_token, check_every_s=3600.0)
    _swap(path, "y" * 20)
    assert watched.get() == "x" * 20  # not looked at again yet
    path.write_text("two tokens\n")
    with pytest.raises(FailedPrecondition, match="one bearer token"):  # a bad file at start is an error
        WatchedFile(path, read_token)


async def test_a_server_follows_its_tokens_file_without_a_restart(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{TOKEN_A}\n")
    loaded = asyncio.Event()
    loaded.set()
    server, _ = make_server(loaded, settings=ServerSettings(host="127.0.0.1", port=0, auth_tokens_file=tokens))
    port = await server.start()
    await server.wait_ready(5)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            await stub.Encode(encoder_pb2.EncodeRequest(), metadata=(("authorization", f"Bearer {TOKEN_A}"),))
            _swap(tokens, f"bob:{TOKEN_B}\n")
            await asyncio.sleep(1.1)  # the file is looked at once a second
            await stub.Encode(encoder_pb2.EncodeRequest(), metadata=(("authorization", f"Bearer {TOKEN_B}"),))
            with pytest.raises(aio.AioRpcError) as info:
                await stub.Encode(encoder_pb2.EncodeRequest(), metadata=(("authorization", f"Bearer {TOKEN_A}"),))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)


# Reflection --------------------------------------------------------------------------------------------------


async def _list_services(port: int) -> list[str]:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
        return [s.name for s in reply.list_services_response.service]


@pytest.mark.parametrize("on", [True, False])
async def test_reflection_can_be_turned_off(on: bool) -> None:
    loaded = asyncio.Event()
    loaded.set()
    server, _ = make_server(loaded, settings=ServerSettings(host="127.0.0.1", port=0, reflection=on))
    port = await server.start()
    try:
        if on:
            assert "modaverse.encoder.v1.EncoderService" in await _list_services(port)
        else:
            with pytest.raises(aio.AioRpcError) as info:
                await _list_services(port)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)
