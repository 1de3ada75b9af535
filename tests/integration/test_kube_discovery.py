"""The gateway with MODAVERSE_DISCOVERY=kubernetes, while calls flow: a route's replicas follow its Service's
EndpointSlices as the API server reports them.

What runs for real: two tiny text-to-image generators (real gRPC servers through the shared lifecycle) on
127.0.0.1 and 127.0.0.2 with one port, as two pods of one Service; the gateway (make_spec, as `modaverse-gateway
serve` builds it) whose image route targets the Service's DNS name, as the chart renders it; the SDK calling the
gateway; the real ``kubernetes`` client in the gateway, configured from a kubeconfig file. The API server is the
stand-in (tests/kube/apiserver.py; no API server can run in CI): it serves the EndpointSlices in the API's wire
format and is where the test adds, marks and removes endpoints, sends bookmarks, answers 410 Gone and cuts
watches. Not exercised: the EndpointSlice controller and kubelet (the test writes the slices they would), RBAC.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from modaverse import AsyncClient, GenerationOptions
from modaverse_gateway.service import make_spec
from modaverse_gateway.settings import GatewaySettings
from modaverse_runtime.server import ModaverseServer
from tests.kube.apiserver import Endpoint, KubeApiServer, endpoint_slice

from .generator_fixtures import RunningGenerator, start_generator
from .in_process import free_port, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS, SERVICE = "ml", "mv-modaverse-gen-image"
FIRST, SECOND = "127.0.0.1", "127.0.0.2"
DEAD = "127.0.0.1:1"  # encoder and LLM: a direct generation needs neither
FAST = GenerationOptions(steps=2, width=32, height=32, seed=1)
WINDOW_S = 2.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pods(model_dir: Path) -> AsyncIterator[dict[str, RunningGenerator]]:
    """Two generator replicas, one port, two addresses: one Service's two pods."""
    port = free_port()
    running = {
        host: await start_generator(model_dir, "text-to-image", host=host, port=port, batching=False)
        for host in (FIRST, SECOND)
    }
    yield running
    for gen in running.values():
        await gen.stop()


@pytest.fixture
def apiserver() -> Iterator[KubeApiServer]:
    server = KubeApiServer().start()
    yield server
    server.close()


def _slice(port: int, *endpoints: Endpoint) -> dict[str, object]:
    return endpoint_slice(NS, SERVICE, endpoints, port)


async def _gateway(apiserver: KubeApiServer, port: int, tmp_path: Path) -> tuple[ModaverseServer, AsyncClient]:
    route = {"modality": "image", "endpoints": [f"dns:///{SERVICE}.{NS}.svc.cluster.local:{port}"], "default": True}
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        encoder_targets=DEAD,
        llm_targets=DEAD,
        routes=json.dumps({"generators": {"image-tiny": route}}),
        discovery="kubernetes",
        kubeconfig=apiserver.kubeconfig(tmp_path / "kubeconfig", NS),
    )
    gateway = await start_server(make_spec(settings), settings, ready_timeout=60)
    return gateway, AsyncClient(f"127.0.0.1:{gateway.port}", timeout=60)


def _served(gen: RunningGenerator) -> int:
    return gen.generator.stats.batches  # one generation per batch: batching is off


async def _until(predicate: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


class Traffic:
    """Direct generations through the gateway, one after another, until stopped; every one must succeed."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.done = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            result = await self.client.generate("image", "a red circle", options=FAST)
            assert len(result.media) == 1 and not result.errors
            self.done += 1

    async def stop(self) -> None:
        if self._task.done():
            self._task.result()  # a failed call fails the test
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _gets_calls(gen: RunningGenerator, within: float = WINDOW_S) -> float:
    """Seconds until ``gen`` runs a denoising step of a new call (its first step, not its end)."""
    steps = gen.generator.stats.steps
    return await _until(lambda: gen.generator.stats.steps > steps, within)


async def _gets_no_calls(gen: RunningGenerator, traffic: Traffic, calls: int = 6, timeout: float = 5.0) -> None:
    """``calls`` generations in a row (the round robin would give it every second one) without one reaching it."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        served, target = _served(gen), traffic.done + calls
        await _until(lambda: traffic.done >= target, timeout)  # noqa: B023 (awaited here, in this iteration)
        if _served(gen) == served:
            return
    raise AssertionError(f"{gen.target} kept getting calls")


async def test_an_added_ready_endpoint_gets_calls_within_two_seconds(
    pods: dict[str, RunningGenerator], apiserver: KubeApiServer, tmp_path: Path
) -> None:
    first, second = pods[FIRST], pods[SECOND]
    port = first.settings.port
    apiserver.put(_slice(port, Endpoint(FIRST)))
    gateway, client = await _gateway(apiserver, port, tmp_path)
    traffic = Traffic(client)
    try:
        served = _served(first), _served(second)
        await _until(lambda: traffic.done >= 4, 30)
        assert _served(first) - served[0] >= 4 and _served(second) == served[1]  # one pod: all calls there

        apiserver.put(_slice(port, Endpoint(FIRST), Endpoint(SECOND)))  # a new pod turned ready
        took = await _gets_calls(second)
        assert took < WINDOW_S, took
        before = _served(first), _served(second), traffic.done
        await _until(lambda: traffic.done >= before[2] + 6, 30)
        assert _served(first) > before[0] and _served(second) > before[1]  # both serve: round robin over the two
    finally:
        await traffic.stop()
        await client.close()
        await gateway.stop(1)


async def test_a_terminating_endpoint_gets_no_new_calls_while_its_call_in_flight_finishes(
    pods: dict[str, RunningGenerator], apiserver: KubeApiServer, tmp_path: Path
) -> None:
    first, second = pods[FIRST], pods[SECOND]
    port = first.settings.port
    apiserver.put(_slice(port, Endpoint(SECOND)))
    gateway, client = await _gateway(apiserver, port, tmp_path)
    try:
        steps = second.generator.stats.steps
        slow = GenerationOptions(steps=200, width=64, height=64, seed=2)
        in_flight = asyncio.create_task(client.generate("image", "a slow blue square", options=slow))
        await _until(lambda: second.generator.stats.steps > steps + 2, 30)  # running on the second pod

        # A rollout: a new pod is ready, the old one terminating (still serving while it drains).
        apiserver.put(_slice(port, Endpoint(FIRST), Endpoint(SECOND, ready=False, serving=True, terminating=True)))
        served = _served(first), _served(second)
        await asyncio.sleep(0.5)  # the gateway hears of it (well within this)
        for _ in range(6):
            result = await client.generate("image", "a red circle", options=FAST)
            assert len(result.media) == 1 and not result.errors
        assert not in_flight.done(), "the call in flight ended too soon to show anything"
        assert _served(first) - served[0] == 6 and _served(second) == served[1]  # no new call to the terminating pod

        result = await asyncio.wait_for(in_flight, 120)  # ... and the call in flight on it finishes
        assert len(result.media) == 1 and not result.errors
        assert _served(second) == served[1] + 1
    finally:
        in_flight.cancel()
        await asyncio.gather(in_flight, return_exceptions=True)
        await client.close()
        await gateway.stop(1)


async def test_discovery_survives_a_bookmark_a_410_gone_and_a_cut_watch(
    pods: dict[str, RunningGenerator], apiserver: KubeApiServer, tmp_path: Path
) -> None:
    first, second = pods[FIRST], pods[SECOND]
    port = first.settings.port
    one, both = _slice(port, Endpoint(FIRST)), _slice(port, Endpoint(FIRST), Endpoint(SECOND))
    apiserver.put(one)
    gateway, client = await _gateway(apiserver, port, tmp_path)
    traffic = Traffic(client)
    try:
        await _until(lambda: traffic.done >= 2, 30)
        await asyncio.to_thread(apiserver.wait_for, lambda: apiserver.open_watches() == 1)

        apiserver.advance()
        apiserver.bookmark()  # a bookmark: the watch goes on (its resourceVersion moves on: unit test)
        apiserver.put(both)
        assert await _gets_calls(second) < WINDOW_S

        lists = len(apiserver.list_requests())
        apiserver.expire()  # 410 Gone on the open watch (an ERROR event): the gateway lists again
        await asyncio.to_thread(apiserver.wait_for, lambda: len(apiserver.list_requests()) == lists + 1)
        apiserver.put(one)
        await _gets_no_calls(second, traffic)

        apiserver.expire(http=True)  # the watch is cut, and the next one from its resourceVersion is HTTP 410
        await asyncio.to_thread(apiserver.wait_for, lambda: len(apiserver.list_requests()) == lists + 2)
        apiserver.put(both)
        assert await _gets_calls(second) < WINDOW_S

        watches = len(apiserver.watch_requests())
        apiserver.drop_watches()  # a cut connection: watched again from where it was, after a short backoff
        await asyncio.to_thread(apiserver.wait_for, lambda: len(apiserver.watch_requests()) == watches + 1)
        apiserver.put(one)
        await _gets_no_calls(second, traffic)
        assert len(apiserver.list_requests()) == lists + 2  # no list needed for a cut connection
    finally:
        await traffic.stop()
        await client.close()
        await gateway.stop(1)
