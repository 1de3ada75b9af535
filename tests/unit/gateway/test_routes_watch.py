"""The routing file's watcher: what counts as a change (a Kubernetes ``..data`` symlink swap included), what a
changed table does to the routes and their replica sets, and that a file which cannot be used changes nothing.
No generator is called: replica sets are only created, counted and closed (tests/integration has the real calls)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from modaverse_gateway.backends import Backends
from modaverse_gateway.metaresponse import OutputModality
from modaverse_gateway.replicas import Replica, ReplicaSet
from modaverse_gateway.routes import RoutingTable, load_routes
from modaverse_gateway.routes_watch import RoutesWatcher
from modaverse_gateway.settings import GatewaySettings
from modaverse_runtime.files import file_stamp

IMAGE = OutputModality.IMAGE


def table(**routes: tuple[str, str, bool]) -> str:
    """A routing file's text: name=(modality, endpoint, default)."""
    return json.dumps(
        {"generators": {n: {"modality": m, "endpoints": [e], "default": d} for n, (m, e, d) in routes.items()}}
    )


BEFORE = table(sd15=("image", "a:1", True), t2v=("video", "v:1", True), old=("audio", "o:1", True))
# sd15 stays (its endpoints too) but is no longer the default; sdxl is added as the default; t2v is re-pointed; old
# is removed.
AFTER = table(sd15=("image", "a:1", False), sdxl=("image", "b:1", True), t2v=("video", "v:2", True))


class Mounted:
    """A file laid out as the kubelet mounts a ConfigMap key: ``routes.yaml`` → ``..data/routes.yaml``, ``..data`` →
    a timestamped folder; an update writes a new folder and renames a new ``..data`` symlink over the old one."""

    def __init__(self, root: Path, text: str) -> None:
        self.root = root
        self.versions = 0
        self.write(text)
        (root / "routes.yaml").symlink_to("..data/routes.yaml")

    @property
    def path(self) -> Path:
        return self.root / "routes.yaml"

    def write(self, text: str, mtime_ns: int | None = None) -> None:
        self.versions += 1
        folder = self.root / f"..2024_01_01_00_00_0{self.versions}"
        folder.mkdir()
        (folder / "routes.yaml").write_text(text)
        if mtime_ns is not None:
            os.utime(folder / "routes.yaml", ns=(mtime_ns, mtime_ns))
        (self.root / "..data_tmp").symlink_to(folder.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")


def reloads(result: str) -> float:
    return REGISTRY.get_sample_value("modaverse_gateway_routes_reloads_total", {"result": result}) or 0.0


class Gateway:
    """What the gateway's service wires together, without a server: the shared table, the backends, the watcher."""

    def __init__(self, mounted: Mounted, every_s: float = 0.05) -> None:
        settings = GatewaySettings(routes_file=mounted.path, routes_reload_s=every_s)
        self.routes = RoutingTable()
        self.backends = Backends(settings, self.routes)
        self.watcher = RoutesWatcher(settings.routes_file, self.routes, self.backends, every_s)
        seen = self.watcher.stamp()
        loaded = load_routes(mounted.path, "")
        self.routes.routes.update(loaded.routes)
        self.backends.add_routes(loaded)
        self.watcher._seen = seen  # as start() would, without its task: tests call check() themselves

    async def close(self) -> None:
        await self.watcher.stop()
        await self.backends.close()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Mounted, Gateway]]:
    mounted = Mounted(tmp_path, BEFORE)
    gw = Gateway(mounted)
    yield mounted, gw
    await gw.close()


def test_the_stamp_follows_a_data_symlink_swap_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    mounted = Mounted(tmp_path, "generators: {a: 1}\n")
    before = file_stamp(mounted.path)
    mtime = mounted.path.stat().st_mtime_ns
    assert before is not None and file_stamp(mounted.path) == before  # looking twice is no change
    mounted.write("generators: {b: 2}\n", mtime_ns=mtime)  # same size, same mtime: only the target differs
    after = file_stamp(mounted.path)
    assert after is not None and after != before
    assert after[0].endswith("..2024_01_01_00_00_02/routes.yaml")
    assert file_stamp(tmp_path / "missing.yaml") is None
    assert file_stamp(None) is None


async def test_a_changed_table_is_applied_keeping_the_replica_sets_of_unchanged_routes(
    gateway: tuple[Mounted, Gateway],
) -> None:
    mounted, gw = gateway
    sets = dict(gw.backends.generators)
    ok = reloads("ok")
    assert not await gw.watcher.check()  # unchanged: nothing read, nothing counted
    mounted.write(AFTER)
    assert await gw.watcher.check()
    assert reloads("ok") == ok + 1
    assert gw.routes.resolve(IMAGE).name == "sdxl"
    assert gw.routes.resolve(IMAGE, "sd15").endpoints == ("a:1",)
    assert set(gw.routes.routes) == {"sd15", "sdxl", "t2v"}
    assert gw.backends.generators["sd15"] is sets["sd15"]  # its connections are kept
    assert [r.target for r in gw.backends.generators["sdxl"].replicas] == ["b:1"]
    assert gw.backends.generators["t2v"] is not sets["t2v"]
    assert [r.target for r in gw.backends.generators["t2v"].replicas] == ["v:2"]
    # The removed route's set stays reachable (for a call that resolved it just before) until it is closed.
    assert gw.backends.generators["old"] is sets["old"]
    await asyncio.wait_for(asyncio.gather(*gw.watcher._retiring), 5)
    assert "old" not in gw.backends.generators
    assert not await gw.watcher.check()  # applied once


async def test_a_retired_replica_set_is_closed_only_after_its_calls_end(
    gateway: tuple[Mounted, Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    mounted, gw = gateway
    old, removed = gw.backends.generators["t2v"], gw.backends.generators["old"]
    closed: list[str] = []
    for replicas in (old, removed):
        monkeypatch.setattr(replicas, "close", _recorder(closed, replicas.name))
    release = asyncio.Event()

    async def open_stream(replica: Replica) -> AsyncIterator[str]:
        yield "first"
        await release.wait()
        yield "last"

    call = asyncio.create_task(_drain(old.stream(open_stream)))
    await asyncio.sleep(0.01)
    assert old.in_flight == 1
    mounted.write(AFTER)
    assert await gw.watcher.check()
    await asyncio.sleep(0.3)  # well past the watcher's own wait and several looks at the count
    assert closed == ["generator old"]  # the idle set is closed, the busy one is not
    release.set()
    assert await call == ["first", "last"]  # the call in flight finished on its replica set
    assert old.in_flight == 0
    await asyncio.wait_for(asyncio.gather(*gw.watcher._retiring), 5)
    assert closed == ["generator old", "generator t2v"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("generators: [", "not valid YAML/JSON"),
        (table(a=("image", "a:1", True), b=("image", "b:1", True)), "several default image generators"),
        ('{"generators": {"x": {"modality": "smell", "endpoints": ["x:1"]}}}', "needs modality image, video or audio"),
        ("  \n", "the file is empty"),
    ],
)
async def test_a_file_that_cannot_be_used_keeps_the_table_and_is_reported_once(
    gateway: tuple[Mounted, Gateway], caplog: pytest.LogCaptureFixture, text: str, reason: str
) -> None:
    mounted, gw = gateway
    routes, sets = dict(gw.routes.routes), dict(gw.backends.generators)
    errors, ok = reloads("error"), reloads("ok")
    mounted.write(text)
    with caplog.at_level(logging.ERROR, logger="modaverse_gateway.routes_watch"):
        assert not await gw.watcher.check()
        assert not await gw.watcher.check()  # the same bad file: not read or reported again
    (record,) = caplog.records
    assert reason in record.getMessage() and str(mounted.path) in record.getMessage()
    assert "keeping the routes in force: sd15(image, default) t2v(video, default) old(audio, default)" in (
        record.getMessage()
    )
    assert (reloads("error"), reloads("ok")) == (errors + 1, ok)
    assert gw.routes.routes == routes and gw.backends.generators == sets
    mounted.write(AFTER)  # the next good file is applied
    assert await gw.watcher.check()
    assert gw.routes.resolve(IMAGE).name == "sdxl"


async def test_a_missing_file_keeps_the_table(gateway: tuple[Mounted, Gateway]) -> None:
    mounted, gw = gateway
    errors = reloads("error")
    (mounted.root / "..data").unlink()
    assert not await gw.watcher.check()
    assert reloads("error") == errors + 1
    assert gw.routes.resolve(IMAGE).name == "sd15"


async def test_the_watcher_applies_a_change_by_itself_and_stops(tmp_path: Path) -> None:
    mounted = Mounted(tmp_path, BEFORE)
    gw = Gateway(mounted, every_s=0.05)
    gw.watcher.start(gw.watcher.stamp())
    try:
        mounted.write(AFTER)
        for _ in range(100):
            if "sdxl" in gw.routes.routes:
                break
            await asyncio.sleep(0.02)
        assert gw.routes.resolve(IMAGE).name == "sdxl"
    finally:
        await gw.close()
    assert gw.watcher._task is None and not gw.watcher._retiring


async def test_no_file_or_a_zero_interval_watches_nothing(tmp_path: Path) -> None:
    mounted = Mounted(tmp_path, BEFORE)
    for path, every_s in ((None, 2.0), (mounted.path, 0.0)):
        watcher = RoutesWatcher(path, RoutingTable(), Backends(GatewaySettings(), RoutingTable()), every_s)
        watcher.start(watcher.stamp())
        assert watcher._task is None
        await watcher.stop()


async def test_in_flight_counts_calls_while_they_run() -> None:
    replicas = ReplicaSet("test", ["a:1"])
    gate = asyncio.Event()

    async def open_stream(replica: Replica) -> AsyncIterator[str]:
        yield "x"
        await gate.wait()
        yield "y"

    stream = replicas.stream(open_stream)
    assert await anext(stream) == "x" and replicas.in_flight == 1
    await stream.aclose()  # a caller that stops early
    assert replicas.in_flight == 0

    async def unary(replica: Replica) -> str:
        assert replicas.in_flight == 1
        return "ok"

    assert await replicas.call(unary) == "ok" and replicas.in_flight == 0


def _recorder(closed: list[str], name: str) -> Any:
    async def close() -> None:
        closed.append(name)

    return close


async def _drain(stream: AsyncIterator[str]) -> list[str]:
    return [item async for item in stream]
