"""Replicas added behind a DNS name get calls once the servers limit their connections' age.

gRPC resolves a target's DNS name when a channel starts and again only when a connection ends, so a client
holding healthy connections to a headless Service's first pods never calls the pods an autoscaler adds. With
MODAVERSE_MAX_CONNECTION_AGE_S every server ends its connections after that long (GOAWAY), and the client
resolves the name again before it reconnects.

What runs for real: two servers of one service through the shared lifecycle (runtime/server.py, whose options
are under test; the servicer is the scripted LLM, which records the requests each replica got), on 127.0.0.1
and 127.0.0.2 with one port as two pods of a headless Service have; a round_robin channel as the gateway opens
(discovery.py); and gRPC's own c-ares resolver, sent by the target's authority (``dns://127.0.0.1:<port>/…``)
to a DNS server in this test whose answer for the name grows from one address to two while calls flow, as a
headless Service's does when a new pod turns ready. Not exercised: CoreDNS and its caching, the kubelet, and
gRPC's default 30 s minimum between two resolutions of one channel, which the client here lowers to 100 ms so
that the test takes seconds (in production it spaces re-resolutions like the chart's 30 s age does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from grpc import aio

from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc

from .dns_stub import DnsStub
from .in_process import free_port
from .scripted_llm import start_scripted_llm

FIRST, ADDED = "127.0.0.1", "127.0.0.2"
WINDOW_S = 2.0  # the added replica must be called within this long


@pytest.fixture
async def dns() -> AsyncIterator[DnsStub]:
    stub = DnsStub("llm.modaverse.test", [FIRST])
    await stub.start()
    yield stub
    stub.close()


async def _calls_until(stub: llm_pb2_grpc.LLMServiceAsyncStub, done: float) -> None:
    request = llm_pb2.GenerateRequest(
        messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, segments=[llm_pb2.Segment(text="hi")])]
    )
    while time.monotonic() < done:
        async for _ in stub.Generate(request, timeout=5):
            pass
        await asyncio.sleep(0.01)


async def _added_replica_first_called_after(dns: DnsStub, age_s: float) -> tuple[float | None, int, int]:
    """Calls flow for 0.5 s to the one replica the name resolves to, then the name gains a second replica and
    calls flow for WINDOW_S more. Returns when the second was first called (s after it was added; None: never),
    and how many calls each replica got after the second was added."""
    port = free_port()
    first, first_llm = await start_scripted_llm(port, host=FIRST, max_connection_age_s=age_s)
    added, added_llm = await start_scripted_llm(port, host=ADDED, max_connection_age_s=age_s)
    channel = aio.insecure_channel(
        f"dns://127.0.0.1:{dns.port}/{dns.name}:{port}",
        options=[("grpc.lb_policy_name", "round_robin"), ("grpc.dns_min_time_between_resolutions_ms", 100)],
    )
    try:
        stub: llm_pb2_grpc.LLMServiceAsyncStub = llm_pb2_grpc.LLMServiceStub(channel)
        await _calls_until(stub, time.monotonic() + 0.5)
        assert first_llm.requests and not added_llm.requests
        before = len(first_llm.requests)
        dns.addresses.append(ADDED)
        added_at = time.monotonic()
        first_seen: float | None = None
        calls = asyncio.create_task(_calls_until(stub, added_at + WINDOW_S))
        while not calls.done():
            if first_seen is None and added_llm.requests:
                first_seen = time.monotonic() - added_at
            await asyncio.sleep(0.01)
        await calls
        return first_seen, len(first_llm.requests) - before, len(added_llm.requests)
    finally:
        await channel.close()
        await first.stop(grace=0)
        await added.stop(grace=0)


async def test_an_added_replica_is_called_within_two_seconds_when_connections_age(dns: DnsStub) -> None:
    first_seen, to_first, to_added = await _added_replica_first_called_after(dns, age_s=1.0)
    assert first_seen is not None and first_seen < WINDOW_S, first_seen
    assert to_added > 0 and to_first > 0  # both serve: round robin over the new answer
    assert dns.queries >= 2  # resolved again, not just reconnected


async def test_without_a_connection_age_the_added_replica_gets_nothing(dns: DnsStub) -> None:
    first_seen, to_first, to_added = await _added_replica_first_called_after(dns, age_s=0.0)
    assert first_seen is None and to_added == 0
    assert to_first > 20  # calls did flow all along, all to the replica found first
    assert dns.queries == 1
