"""A running gateway follows its routing file: a changed, valid table is applied without a restart.

In Kubernetes the file is a mounted ConfigMap, which the kubelet updates by writing the new contents into a fresh
folder and swapping the ``..data`` symlink to it, so the file's path stays while its resolved target, inode and
mtime change; the watcher compares those (``file_stamp``), never the contents, every ``MODAVERSE_ROUTES_RELOAD_S``.
A changed file is read and validated off the event loop; a file that cannot be used (unreadable, not YAML/JSON,
an invalid table, or empty, which is what a half-written file looks like) is logged once and counted, and the
table in force stays. A valid one is swapped in at once, in one step on the event loop (see ``apply``): a call
sees either the old table or the new one. Routes whose endpoints are unchanged keep their replica sets and
connections; new and re-pointed routes get new ones; the replica set of a removed or re-pointed route is closed
once the calls running on it have ended (docs/gateway.md#routing-reloads).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from prometheus_client import Counter

from modaverse_runtime.errors import FailedPrecondition, ModaverseError
from modaverse_runtime.files import Stamp, file_stamp

from .backends import Backends
from .replicas import ReplicaSet
from .routes import Route, RoutingTable, parse_routes

log = logging.getLogger(__name__)

RELOADS = Counter(
    "modaverse_gateway_routes_reloads_total",
    "Changes of the routing file by result: ok (the new table is in force) or error (refused; the old one stays)",
    ["result"],
)
IDLE_POLL_S = 0.1  # how often a retired replica set looks whether its last call has ended


def read_routes(path: Path) -> RoutingTable:
    """A changed routing file's table. Empty is refused here (unlike at start, where it means no generators):
    it is what a file caught half-written looks like, so a table is emptied only by saying ``generators: {}``."""
    text = path.read_text()
    if not text.strip():
        raise FailedPrecondition("routes: the file is empty (write `generators: {}` to remove every route)")
    return parse_routes(text, json_text=path.suffix == ".json")


class RoutesWatcher:
    """Applies changes of ``path`` to ``routes`` (the table the orchestrator and servicer share) and to the
    generators' replica sets in ``backends``. Off when there is no file or ``every_s`` is 0."""

    def __init__(self, path: Path | None, routes: RoutingTable, backends: Backends, every_s: float) -> None:
        self.path = path
        self.routes = routes
        self.backends = backends
        self.every_s = every_s
        self._seen: Stamp | None = None
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    def stamp(self) -> Stamp | None:
        """The file's stamp now: taken before the first read, so a change made while it is read is applied."""
        return file_stamp(self.path)

    def start(self, seen: Stamp | None) -> None:
        """Watch from the table read when the file had stamp ``seen``."""
        self._seen = seen
        if self.path is not None and self.every_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="routes-watch")

    async def stop(self) -> None:
        """Stop watching; replica sets still waiting for their calls are closed now (the server has drained)."""
        tasks = [t for t in (self._task, *self._retiring) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.check()
            except Exception:  # a bug here must not end the watching
                log.exception("routes: checking %s failed", self.path)

    async def check(self) -> bool:
        """Look at the file once; True when a new table was applied."""
        assert self.path is not None
        stamp = file_stamp(self.path)
        if stamp == self._seen:
            return False
        try:
            table: RoutingTable | None = await asyncio.to_thread(read_routes, self.path)
            error = ""
        except (OSError, UnicodeDecodeError, ModaverseError) as exc:
            table, error = None, exc.message if isinstance(exc, ModaverseError) else f"{type(exc).__name__}: {exc}"
        if file_stamp(self.path) != stamp:
            return False  # changed again while being read: the next look reads it whole
        self._seen = stamp  # a file that cannot be used is reported once, not at every look
        if table is None:
            RELOADS.labels("error").inc()
            log.error(
                "routes: %s changed but cannot be used (%s); keeping the routes in force: %s",
                self.path,
                error,
                describe(self.routes) or "none",
            )
            return False
        self.apply(table)
        RELOADS.labels("ok").inc()
        return True

    def apply(self, table: RoutingTable) -> None:
        """Swap ``table`` in. Synchronous, so no call runs between its steps: every route of the table in force
        has its replica set whenever a call looks."""
        old = self.routes.routes
        repointed = {
            name for name, route in table.routes.items() if name in old and route.endpoints != old[name].endpoints
        }
        added = table.routes.keys() - old.keys()
        removed = old.keys() - table.routes.keys()
        retired = {name: self.backends.generators[name] for name in removed | repointed}
        # New replica sets (their channels start connecting now, so the first call does not wait for it); a
        # removed route keeps its set in `backends` until it is closed: a call that resolved the route just
        # before the swap still finds it.
        self.backends.add_routes(RoutingTable({name: table.routes[name] for name in added | repointed}))
        for name in added | repointed:
            _connect(self.backends.generators[name])
        self.routes.routes = dict(table.routes)
        for name, replicas in retired.items():
            task = asyncio.create_task(self._close_when_idle(name, replicas), name=f"routes-retire-{name}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        changes = [f"+{n}" for n in sorted(added)] + [f"~{n}" for n in sorted(repointed)]
        log.info(
            "routes: %s applied (%s); in force: %s",
            self.path,
            " ".join(changes + [f"-{n}" for n in sorted(removed)]) or "endpoints unchanged",
            describe(self.routes) or "none",
        )

    async def _close_when_idle(self, name: str, replicas: ReplicaSet) -> None:
        """Close a set the table no longer uses once its calls have ended. Every call has a deadline, so this
        ends; the first wait lets a call that resolved the old route just before the swap start on it."""
        try:
            await asyncio.sleep(max(self.every_s, IDLE_POLL_S))
            # Polled: a counter is all a replica set keeps, and a retired set is rare and lives for one call's length.
            while replicas.in_flight:  # noqa: ASYNC110
                await asyncio.sleep(IDLE_POLL_S)
        finally:
            if self.backends.generators.get(name) is replicas:
                del self.backends.generators[name]
            await replicas.close()
            log.info(
                "routes: closed the connections of %s (%s)",
                replicas.name,
                ", ".join(r.target for r in replicas.replicas),
            )


def describe(table: RoutingTable) -> str:
    """``sdxl(image, default) sd15(image) …``: what a log line says about a table."""
    return " ".join(_describe(r, table) for r in table.routes.values())


def _describe(route: Route, table: RoutingTable) -> str:
    default = table.default_for(route.modality)
    mark = ", default" if default is not None and default.name == route.name else ""
    return f"{route.name}({route.modality}{mark})"


def _connect(replicas: ReplicaSet) -> None:
    for replica in replicas.replicas:
        replica.channel.get_state(try_to_connect=True)
