"""ReplicaSet's failover, for unary calls and streams alike (one retry loop serves both): which replica is
tried next, what is retried, backoff, cool-down marks, the wait for capacity when every replica is busy, and
that a stream never fails over once it has yielded. No channel is opened: the fake calls only look at the
replica's target."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc import aio
from prometheus_client import REGISTRY

from modaverse_gateway import replicas as replicas_module
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

    async def unary(self, replicas: ReplicaSet, deadline: float | None = None) -> list[str]:
        async def call(replica: Replica) -> str:
            return self._answer(replica)

        return [await replicas.call(call, deadline=deadline)]

    async def stream(self, replicas: ReplicaSet, deadline: float | None = None) -> list[str]:
        async def open_stream(replica: Replica) -> AsyncIterator[str]:
            yield self._answer(replica)

        return [item async for item in replicas.stream(open_stream, deadline=deadline)]


Call = Callable[..., Awaitable[list[str]]]
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


@pytest.mark.parametrize("code", [UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_a_stream_that_fails_after_its_first_item_is_not_retried(
    code: grpc.StatusCode, sleeps: list[float]
) -> None:
    replicas = replica_set("a:1", "b:1", busy_wait_s=30)
    tried: list[str] = []

    async def open_stream(replica: Replica) -> AsyncIterator[str]:
        tried.append(replica.target)
        yield f"{replica.target} 1"
        raise rpc_error(code)

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


EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("kind", KINDS)
async def test_resource_exhausted_goes_at_once_to_a_replica_not_tried_yet(kind: str, sleeps: list[float]) -> None:
    replicas = replica_set("a:1", "b:1", "c:1")
    fake = Fake({"a:1": EXHAUSTED, "b:1": EXHAUSTED, "c:1": "from c"})
    assert await KINDS[kind](fake, replicas) == ["from c"]
    assert fake.tried == ["a:1", "b:1", "c:1"]
    assert sleeps == []  # another replica has room now: no backoff
    assert all(r.failed_at < 0 for r in replicas.replicas)  # busy, not down: no cool-down


@pytest.mark.parametrize("kind", KINDS)
async def test_every_replica_exhausted_is_resource_exhausted_each_tried_once(kind: str, sleeps: list[float]) -> None:
    replicas = replica_set("a:1", "b:1", attempts=5)
    fake = Fake({"a:1": EXHAUSTED, "b:1": EXHAUSTED})
    with pytest.raises(aio.AioRpcError) as raised:
        await KINDS[kind](fake, replicas)
    assert raised.value.code() == EXHAUSTED
    assert fake.tried == ["a:1", "b:1"] and sleeps == []


@pytest.mark.parametrize("kind", KINDS)
async def test_exhausted_tries_use_up_no_attempts_and_unavailable_ones_still_back_off(
    kind: str, sleeps: list[float]
) -> None:
    # More replicas than attempts: the busy ones do not count, so the free one at the end is reached.
    replicas = replica_set("a:1", "b:1", "c:1", "d:1", attempts=2)
    fake = Fake({"a:1": EXHAUSTED, "b:1": UNAVAILABLE, "c:1": EXHAUSTED, "d:1": "from d"})
    assert await KINDS[kind](fake, replicas) == ["from d"]
    assert fake.tried == ["a:1", "b:1", "c:1", "d:1"]
    assert sleeps == [0.1]  # only after the UNAVAILABLE one


@pytest.mark.parametrize("kind", KINDS)
async def test_a_busy_replica_is_not_retried_while_the_others_are_unavailable(kind: str, sleeps: list[float]) -> None:
    replicas = replica_set("a:1", "b:1", attempts=3, busy_wait_s=30)  # one is down, not all busy: no wait
    fake = Fake({"a:1": EXHAUSTED, "b:1": UNAVAILABLE})
    with pytest.raises(aio.AioRpcError) as raised:
        await KINDS[kind](fake, replicas)
    assert raised.value.code() == UNAVAILABLE  # not every replica is exhausted: one is down
    assert fake.tried == ["a:1", "b:1", "b:1", "b:1"]


@dataclass
class Clock:
    """The fake ``monotonic`` of replicas.py, which each pause (not slept) moves on."""

    now: float = 1000.0
    pauses: list[float] = field(default_factory=list)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    real_sleep = asyncio.sleep

    async def sleep(delay: float, *args: Any) -> None:
        fake.pauses.append(delay)
        fake.now += delay
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(replicas_module, "monotonic", lambda: fake.now)
    return fake


class BusyFor(Fake):
    """Every replica answers RESOURCE_EXHAUSTED to the first ``tries`` calls, then its name."""

    def __init__(self, targets: list[str], tries: int) -> None:
        super().__init__({t: t for t in targets})
        self.busy_tries = tries

    def _answer(self, replica: Replica) -> str:
        if len(self.tried) < self.busy_tries:
            self.tried.append(replica.target)
            raise rpc_error(EXHAUSTED)
        return super()._answer(replica)


def busy_waits(name: str = "test") -> float:
    return REGISTRY.get_sample_value("modaverse_gateway_busy_waits_total", {"service": name}) or 0.0


@pytest.mark.parametrize("kind", KINDS)
async def test_every_replica_busy_waits_with_jittered_doubling_pauses_then_gets_in(kind: str, clock: Clock) -> None:
    replicas = replica_set("a:1", "b:1", busy_wait_s=30, busy_backoff_s=(0.05, 1.0))
    fake = BusyFor(["a:1", "b:1"], tries=6)  # three rounds of both replicas busy
    before = busy_waits()
    assert await KINDS[kind](fake, replicas) == fake.tried[-1:]
    assert len(fake.tried) == 7  # each round tries every replica once (each round starts where the rotation is)
    assert [set(fake.tried[i : i + 2]) for i in (0, 2, 4)] == [{"a:1", "b:1"}] * 3
    assert len(clock.pauses) == 3 and busy_waits() - before == 3
    for pause, full in zip(clock.pauses, [0.05, 0.1, 0.2], strict=True):
        assert full / 2 <= pause <= full  # each drawn from the upper half of its backoff
    assert all(r.failed_at < 0 for r in replicas.replicas)  # busy is not down: no cool-down


@pytest.mark.parametrize("kind", KINDS)
async def test_pauses_grow_to_at_most_the_longest_backoff(kind: str, clock: Clock) -> None:
    replicas = replica_set("a:1", busy_wait_s=30, busy_backoff_s=(0.05, 1.0))
    await KINDS[kind](BusyFor(["a:1"], tries=12), replicas)
    assert len(clock.pauses) == 12 and max(clock.pauses) <= 1.0 and clock.pauses[-1] >= 0.5


@pytest.mark.parametrize("kind", KINDS)
async def test_all_busy_past_half_the_time_left_is_resource_exhausted_saying_how_long(kind: str, clock: Clock) -> None:
    replicas = replica_set("a:1", "b:1", busy_wait_s=30)
    fake = BusyFor(["a:1", "b:1"], tries=10**6)
    with pytest.raises(aio.AioRpcError) as raised:
        await KINDS[kind](fake, replicas, deadline=clock.now + 10)
    assert raised.value.code() == EXHAUSTED
    # Half of the 10 s left: the other half is the call's own. The last pause is cut to end there, and the
    # replicas are tried once more after it.
    assert sum(clock.pauses) == pytest.approx(5.0)
    assert raised.value.details() == "every replica was busy for 5.0 s; last answer: RESOURCE_EXHAUSTED here"
    assert len(fake.tried) == 2 * (len(clock.pauses) + 1)


@pytest.mark.parametrize("kind", KINDS)
async def test_the_wait_is_capped_by_busy_wait_s(kind: str, clock: Clock) -> None:
    replicas = replica_set("a:1", busy_wait_s=3)
    with pytest.raises(aio.AioRpcError, match=r"busy for 3\.0 s"):
        await KINDS[kind](BusyFor(["a:1"], tries=10**6), replicas, deadline=clock.now + 600)
    assert sum(clock.pauses) == pytest.approx(3.0)


@pytest.mark.parametrize("kind", KINDS)
async def test_no_time_left_to_wait_is_resource_exhausted_at_once(kind: str, clock: Clock) -> None:
    replicas = replica_set("a:1", busy_wait_s=30)
    with pytest.raises(aio.AioRpcError) as raised:
        await KINDS[kind](BusyFor(["a:1"], tries=10**6), replicas, deadline=clock.now)
    assert raised.value.details() == "RESOURCE_EXHAUSTED here" and clock.pauses == []  # the replica's own answer


async def test_a_cancelled_call_stops_waiting_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    replicas = replica_set("a:1", busy_wait_s=600)
    fake = BusyFor(["a:1"], tries=10**6)
    pausing = asyncio.Event()
    real_sleep = asyncio.sleep

    async def sleep(delay: float, *args: Any) -> None:
        pausing.set()
        await real_sleep(3600)  # only a cancellation ends this pause

    monkeypatch.setattr(asyncio, "sleep", sleep)
    call = asyncio.ensure_future(fake.stream(replicas))
    await pausing.wait()
    assert fake.tried == ["a:1"] and replicas.in_flight == 1
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert fake.tried == ["a:1"] and replicas.in_flight == 0
