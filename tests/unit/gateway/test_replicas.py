"""ReplicaSet's failover, for unary calls and streams alike (one retry loop serves both): which replica is
tried next, what is retried, backoff, cool-down marks, and that a stream never fails over once it has yielded.
No channel is opened: the fake calls only look at the replica's target."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc import aio

from modaverse_gateway.replicas import Replica, ReplicaSet

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

# What a replica does when called: answer (a str), or fail with a status.
Script = dict[str, str | grpc.StatusCode]


def rpc_error(code: grpc.StatusCode) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=f"{code.name} here")


class Fake:
    """Calls to a ReplicaSet in one of the two ways the gateway makes them, recording the targets tried."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.tried: list[str] = []

    def _answer(self, replica: Replica) -> str:
        self.tried.append(replica.target)
        outcome = self.script[replica.target]
        if isinstance(outcome, grpc.StatusCode):
            raise rpc_error(outcome)
        return outcome

    async def unary(self, replicas: ReplicaSet) -> list[str]:
        async def call(replica: Replica) -> str:
            return self._answer(replica)

        return [await replicas.call(call)]

    async def stream(self, replicas: ReplicaSet) -> list[str]:
        async def open_stream(replica: Replica) -> AsyncIterator[str]:
            yield self._answer(replica)

        return [item async for item in replicas.stream(open_stream)]


Call = Callable[[Fake, ReplicaSet], Awaitable[list[str]]]
KINDS: dict[str, Call] = {"unary": Fake.unary, "stream": Fake.stream}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff delays asked for (not slept, so the tests stay fast)."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float, *args: Any) -> None:
        asked.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", record)  # the module replicas.py sleeps through
    return asked


def replica_set(*targets: str, **kwargs: Any) -> ReplicaSet:
    kwargs.setdefault("backoff_s", 0.1)
    return ReplicaSet("test", list(targets), **kwargs)


@pytest.mark.parametrize("kind", KINDS)
async def test_unavailable_fails_over_to_the_next_replica_and_marks_the_failed_one(
    kind: str, sleeps: list[float]
) -> None:
    replicas = replica_set("a:1", "b:1", "c:1")
    fake = Fake({"a:1": UNAVAILABLE, "b:1": "from b", "c:1": "from c"})
    assert await KINDS[kind](fake, replicas) == ["from b"]
    assert fake.tried == ["a:1", "b:1"]
    assert sleeps == [0.1]
    a, b, c = replicas.replicas
    assert a.failed_at > 0 and b.failed_at < 0 and c.failed_at < 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL]
)
async def test_other_statuses_end_the_call_at_once(kind: str, code: grpc.StatusCode, sleeps: list[float]) -> None:
    replicas = replica_set("a:1", "b:1")
    fake = Fake({"a:1": code, "b:1": "from b"})
    with pytest.raises(aio.AioRpcError) as raised:
        await KINDS[kind](fake, replicas)
    assert raised.value.code() == code
    assert fake.tried == ["a:1"] and sleeps == []
    assert all(r.failed_at < 0 for r in replicas.replicas)  # not the replica's fault: no cool-down


@pytest.mark.parametrize("kind", KINDS)
async def test_after_every_attempt_the_last_unavailable_is_raised_with_exponential_backoff(
    kind: str, sleeps: list[float]
) -> None:
    replicas = replica_set("a:1", "b:1", attempts=4)
    fake = Fake({"a:1": UNAVAILABLE, "b:1": UNAVAILABLE})
    with pytest.raises(aio.AioRpcError) as raised:
        await KINDS[kind](fake, replicas)
    assert raised.value.code() == UNAVAILABLE
    assert fake.tried == ["a:1", "b:1", "a:1", "b:1"]  # round the replicas again when attempts outnumber them
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])


@pytest.mark.parametrize("kind", KINDS)
async def test_calls_rotate_and_a_cooling_replica_goes_last(kind: str, sleeps: list[float]) -> None:
    replicas = replica_set("a:1", "b:1", "c:1")
    ok = Fake({"a:1": "a", "b:1": "b", "c:1": "c"})
    assert [(await KINDS[kind](ok, replicas))[0] for _ in range(3)] == ["a", "b", "c"]
    await KINDS[kind](Fake({"a:1": UNAVAILABLE, "b:1": "b", "c:1": "c"}), replicas)  # a cools down
    rotated = Fake({"a:1": "a", "b:1": "b", "c:1": "c"})
    await KINDS[kind](rotated, replicas)  # the rotation's turn is b's; a is still skipped after that
    await KINDS[kind](rotated, replicas)
    await KINDS[kind](rotated, replicas)
    assert rotated.tried == ["b:1", "c:1", "b:1"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_lone_cooling_replica_is_still_tried(kind: str, sleeps: list[float]) -> None:
    replicas = replica_set("a:1")
    await KINDS[kind](Fake({"a:1": "a"}), replicas)
    replicas.replicas[0].failed_at = 1e12  # cooling down for ever
    assert await KINDS[kind](Fake({"a:1": "again"}), replicas) == ["again"]


@pytest.mark.parametrize("kind", KINDS)
async def test_wake_keeps_trying_past_the_attempts_until_it_has_passed(kind: str) -> None:
    replicas = replica_set("a:1", attempts=1, backoff_s=0.001, wake_s=0.2)
    fake = Fake({"a:1": UNAVAILABLE})
    with pytest.raises(aio.AioRpcError):
        await KINDS[kind](fake, replicas)
    assert len(fake.tried) > 1
    answered = Fake({"a:1": "awake"})
    assert await KINDS[kind](answered, replicas) == ["awake"]


async def test_a_stream_that_fails_after_its_first_item_is_not_retried(sleeps: list[float]) -> None:
    replicas = replica_set("a:1", "b:1")
    tried: list[str] = []

    async def open_stream(replica: Replica) -> AsyncIterator[str]:
        tried.append(replica.target)
        yield f"{replica.target} 1"
        raise rpc_error(UNAVAILABLE)

    received: list[str] = []

    async def consume() -> None:
        async for item in replicas.stream(open_stream):
            received.append(item)

    with pytest.raises(aio.AioRpcError):
        await consume()
    assert received == ["a:1 1"] and tried == ["a:1"] and sleeps == []
    assert replicas.replicas[0].failed_at < 0


async def test_a_stream_that_fails_before_its_first_item_fails_over_whole(sleeps: list[float]) -> None:
    replicas = replica_set("a:1", "b:1")

    async def open_stream(replica: Replica) -> AsyncIterator[str]:
        if replica.target == "a:1":
            raise rpc_error(UNAVAILABLE)
        for i in range(3):
            yield f"{replica.target} {i}"

    assert [item async for item in replicas.stream(open_stream)] == ["b:1 0", "b:1 1", "b:1 2"]
    assert replicas.replicas[0].failed_at > 0


async def test_a_unary_call_awaits_its_replica_once() -> None:
    replicas = replica_set("a:1")
    calls = 0

    async def call(replica: Replica) -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await replicas.call(call) == 1
    assert calls == 1
