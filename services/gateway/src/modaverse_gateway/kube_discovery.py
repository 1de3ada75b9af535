"""Discovery through the Kubernetes API (``MODAVERSE_DISCOVERY=kubernetes``).

A target that names a Service, ``dns:///<service>.<namespace>.svc[.<cluster domain>]:<port>`` as the chart renders
them, is replaced by the Service's ready endpoints, one channel per pod address (``ipv4:10.1.2.3:50053``), followed
through its EndpointSlices (discovery.k8s.io/v1, label ``kubernetes.io/service-name``) with the ``kubernetes``
client: a list, then a watch from the list's resourceVersion (with bookmarks), again and again.

- An endpoint that turns ready joins its route's replicas as soon as the API server tells: no DNS cache, no
  connection age to wait for.
- An endpoint that is no longer ready or is terminating gets no new call; calls in flight on it go on, and its
  channel closes once they are done (``aio.Channel.close(grace)``, grace: the default deadline).
- Before the first list, and while a Service has no ready endpoint, the route keeps its configured target
  (the headless Service's DNS name, which lists ready pods only): as in ``dns`` mode, and a route scaled to
  zero wakes the same way.
- The watch: BOOKMARK events move the resourceVersion on (so a re-watch starts from there); a 410 Gone (an ERROR
  event with a 410 Status, or HTTP 410 on the watch request) lists again; a watch that ends (its timeoutSeconds)
  is started again from the last resourceVersion; a cut connection or any other error is retried with backoff
  (0.5 s doubling to 30 s).

Targets of other forms (``host:port``, ``ipv4:…``, ``dns:///name:port`` outside ``*.svc``) stay as they are.
The gateway's service account needs get/list/watch on ``endpointslices`` (the chart's Role, gateway.discovery
``kubernetes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from grpc import aio
from kubernetes import client, config, watch

from modaverse_runtime.errors import FailedPrecondition

from .replicas import Replica, ReplicaSet

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
WATCH_TIMEOUT_S = 300  # the API server ends each watch after this; it is started again from its resourceVersion
CONNECT_TIMEOUT_S = 10.0
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
SWEEP_S = 1.0

ServiceKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class ServiceRef:
    """A target that names a Kubernetes Service: its namespace, name and port, and the DNS name it was written
    with (the channels to its pods use it as their authority, so TLS checks the name the certificate holds)."""

    namespace: str
    name: str
    port: int
    host: str

    @property
    def key(self) -> ServiceKey:
        return (self.namespace, self.name)

    @classmethod
    def parse(cls, target: str) -> ServiceRef | None:
        rest = target
        if rest.startswith("dns:"):
            rest = rest[4:]
            if rest.startswith("//"):  # dns://[authority]/host:port
                rest = rest[2:].partition("/")[2]
        host, sep, port = rest.rpartition(":")
        labels = host.split(".")
        if not sep or not port.isdigit() or len(labels) < 3 or labels[2] != "svc" or not all(labels[:2]):
            return None
        return cls(labels[1], labels[0], int(port), host)


@dataclass(frozen=True)
class SliceView:
    """What discovery needs of one EndpointSlice: its address type, ports, and each endpoint's first address and
    whether it may get new calls (ready, and not terminating; an unset condition reads as the API says: ready
    true, terminating false)."""

    address_type: str
    ports: tuple[tuple[str, int], ...]
    endpoints: tuple[tuple[str, bool], ...]

    @classmethod
    def of(cls, endpoint_slice: client.V1EndpointSlice) -> SliceView:
        ports = tuple((p.name or "", p.port) for p in endpoint_slice.ports or () if p.port is not None)
        endpoints = []
        for endpoint in endpoint_slice.endpoints or ():
            if not endpoint.addresses:
                continue
            conditions = endpoint.conditions or client.V1EndpointConditions()
            usable = conditions.ready is not False and conditions.terminating is not True
            endpoints.append((endpoint.addresses[0], usable))
        return cls(endpoint_slice.address_type, ports, tuple(endpoints))

    def port_for(self, service_port: int) -> int | None:
        """The endpoints' port for the Service port a target names: the same number (a Service whose port is
        its pods' port, as the chart's), else the port named ``grpc``, else the only one."""
        numbers = [number for _, number in self.ports]
        if service_port in numbers:
            return service_port
        named = [number for name, number in self.ports if name == "grpc"]
        if named:
            return named[0]
        return numbers[0] if len(numbers) == 1 else None

    def ready_targets(self, service_port: int) -> list[str]:
        port = self.port_for(service_port)
        if port is None:
            return []
        form = {"IPv4": "ipv4:{}:{}", "IPv6": "ipv6:[{}]:{}", "FQDN": "dns:///{}:{}"}.get(self.address_type)
        if form is None:
            return []
        return [form.format(address, port) for address, usable in self.endpoints if usable]


def _status_message(error: client.ApiException) -> str:
    """The message of the API's Status object, else the HTTP reason."""
    try:
        return str(json.loads(error.body or "").get("message") or error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


def ready_targets(slices: Mapping[str, SliceView], service_port: int) -> list[str]:
    """The gRPC targets of a Service's ready endpoints over all its slices, sorted, without duplicates."""
    return sorted({target for view in slices.values() for target in view.ready_targets(service_port)})


class SliceWatch:
    """Follows one Service's EndpointSlices: list, then watch from the list's resourceVersion, for ever.

    It runs in a thread of its own, and ``publish`` hands each new state (slice name → view) to the event
    loop. The client is synchronous and a watch blocks for minutes (WATCH_TIMEOUT_S): on the loop's default
    executor each followed Service would hold one of its few workers for the life of the process, taking them
    from ``asyncio.to_thread`` users; a daemon thread per Service costs the same and holds nothing shared. The
    thread never touches the replica sets: ``publish`` goes through ``loop.call_soon_threadsafe``, so every
    change is applied on the loop, between two calls' choices of a replica.
    """

    def __init__(
        self,
        api: client.DiscoveryV1Api,
        key: ServiceKey,
        publish: Callable[[dict[str, SliceView]], None],
        *,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
    ) -> None:
        self.namespace, self.service = key
        self._api = api
        self._publish = publish
        self._watch_timeout_s = watch_timeout_s
        self._stopping = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"endpointslices {self.namespace}/{self.service}", daemon=True
        )
        self.resource_version = ""
        self.lists = 0  # lists so far (the first, then one per 410 Gone)
        self.events = 0  # watch events so far

    @property
    def selector(self) -> str:
        return f"{SERVICE_NAME_LABEL}={self.service}"

    def start(self) -> None:
        if not self._thread.is_alive() and not self._stopping.is_set():
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        current = self._watch
        if current is not None:
            current.stop()  # type: ignore[no-untyped-call]  # shuts the socket down: the blocked read returns

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        """List, then watch, for ever. ``failures`` counts the tries in a row that brought nothing (no event, and
        not a watch the server ended after a while): they back off, 0.5 s doubling to 30 s. The first 410 Gone
        after a useful watch lists again at once; a cut connection watches again from the last resourceVersion."""
        slices: dict[str, SliceView] = {}
        failures = 0
        while not self._stopping.is_set():
            seen, started = self.events, time.monotonic()
            try:
                if not self.resource_version:
                    slices = self._list()
                    self._publish(dict(slices))
                self._watch_once(slices)
                useful = self.events > seen or time.monotonic() - started > 1.0  # else: ended as soon as it began
                failures = 0 if useful else failures + 1
            except client.ApiException as error:
                failures = 0 if self.events > seen else failures + 1
                if error.status == 410:
                    log.info("endpointslices of %s/%s: %s; listing again", self.namespace, self.service, error.reason)
                    self.resource_version = ""
                    if failures <= 1:
                        continue
                else:  # e.g. 403: the account may not watch endpointslices (the chart's Role is missing)
                    log.warning(
                        "endpointslices of %s/%s: API error %s: %s (retrying)",
                        self.namespace,
                        self.service,
                        error.status,
                        _status_message(error),
                    )
            except Exception as error:  # a cut connection, a timeout, a refused connection: never give up
                if self._stopping.is_set():
                    break
                failures = 1 if self.events > seen else failures + 1
                log.warning("endpointslices of %s/%s: %r (retrying)", self.namespace, self.service, error)
            if failures:
                self._stopping.wait(min(BACKOFF_S * 2 ** (failures - 1), MAX_BACKOFF_S))

    def _list(self) -> dict[str, SliceView]:
        reply = self._api.list_namespaced_endpoint_slice(
            self.namespace, label_selector=self.selector, _request_timeout=CONNECT_TIMEOUT_S
        )
        self.lists += 1
        self.resource_version = (reply.metadata.resource_version if reply.metadata else None) or ""
        return {item.metadata.name: SliceView.of(item) for item in reply.items if item.metadata and item.metadata.name}

    def _watch_once(self, slices: dict[str, SliceView]) -> None:
        """One watch request, until the server ends it (or the connection goes); each change is published."""
        current = watch.Watch()  # type: ignore[no-untyped-call]
        self._watch = current
        if self._stopping.is_set():
            return
        events = current.stream(  # type: ignore[no-untyped-call]
            self._api.list_namespaced_endpoint_slice,
            self.namespace,
            label_selector=self.selector,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout_s,
            _request_timeout=(CONNECT_TIMEOUT_S, self._watch_timeout_s + 30),  # a silent dead connection ends too
        )
        for event in events:
            self.events += 1
            kind = event["type"]
            raw = event["raw_object"]
            version = (raw.get("metadata") or {}).get("resourceVersion") if isinstance(raw, dict) else None
            if kind == "BOOKMARK":
                self.resource_version = version or self.resource_version
                continue
            item: client.V1EndpointSlice = event["object"]
            name = item.metadata.name if item.metadata else None
            self.resource_version = version or self.resource_version
            if not name:
                continue
            if kind == "DELETED":
                slices.pop(name, None)
            else:
                slices[name] = SliceView.of(item)
            self._publish(dict(slices))


@dataclass
class _Followed:
    """One replica set whose configured targets (some of them Services) discovery keeps replaced by endpoints."""

    replica_set: ReplicaSet
    configured: list[tuple[Replica, ServiceRef | None]]
    pool: dict[str, Replica] = field(default_factory=dict)  # endpoint target → its replica, while current
    retired: dict[int, tuple[Replica, float]] = field(default_factory=dict)  # id → (replica, when it left)

    def compose(self, slices: Mapping[ServiceKey, Mapping[str, SliceView]]) -> list[Replica]:
        chosen: list[Replica] = []
        for replica, ref in self.configured:
            targets = ready_targets(slices[ref.key], ref.port) if ref is not None and ref.key in slices else []
            if not targets:
                chosen.append(replica)  # static, not listed yet, or no ready endpoint: the configured target
                continue
            assert ref is not None
            for target in targets:
                if target not in self.pool:
                    # the pod, dialled under the Service's name
                    self.pool[target] = Replica(target, replica.config, authority=ref.host)
                chosen.append(self.pool[target])
        unique = list({id(r): r for r in chosen}.values())
        current = {r.target for r in unique}
        for target in [t for t in self.pool if t not in current]:
            del self.pool[target]
        return unique


class KubernetesDiscovery:
    """Keeps replica sets' replicas equal to the ready endpoints of the Services their targets name."""

    def __init__(self, api_client: client.ApiClient, *, drain_s: float, watch_timeout_s: int = WATCH_TIMEOUT_S):
        self._api = client.DiscoveryV1Api(api_client)
        self._api_client = api_client
        self._drain_s = drain_s
        self._watch_timeout_s = watch_timeout_s
        self._followed: dict[int, _Followed] = {}
        self._watches: dict[ServiceKey, SliceWatch] = {}
        self._slices: dict[ServiceKey, dict[str, SliceView]] = {}
        self._listed: dict[ServiceKey, asyncio.Event] = {}
        self._draining: dict[aio.Channel, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sets: Callable[[], Iterable[ReplicaSet]] | None = None

    @property
    def draining(self) -> int:
        """Channels of replicas that left their set, still waiting for their calls in flight."""
        return len(self._draining)

    def watch_of(self, namespace: str, service: str) -> SliceWatch:
        return self._watches[(namespace, service)]

    @property
    def services(self) -> set[ServiceKey]:
        """The Services watched now."""
        return set(self._watches)

    @classmethod
    def from_settings(cls, kubeconfig: Path | None, drain_s: float) -> KubernetesDiscovery:
        """The pod's service account (in-cluster), or a kubeconfig file (outside a cluster, tests)."""
        try:
            if kubeconfig is not None:
                api_client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                api_client = client.ApiClient(configuration)
        except (config.ConfigException, OSError) as error:
            where = f"kubeconfig {kubeconfig}" if kubeconfig else "the pod's service account (in-cluster config)"
            raise FailedPrecondition(
                f"discovery=kubernetes: cannot configure the API client from {where}: {error}"
            ) from error
        return cls(api_client, drain_s=drain_s)

    def follow(self, replica_set: ReplicaSet) -> bool:
        """Follow the Services among ``replica_set``'s targets; False when none of them names a Service."""
        if id(replica_set) in self._followed:
            return True
        configured = [(r, ServiceRef.parse(r.target)) for r in replica_set.replicas]
        refs = [ref for _, ref in configured if ref is not None]
        if not refs:
            return False
        followed = _Followed(replica_set, configured)
        self._followed[id(replica_set)] = followed
        for ref in refs:
            log.info("%s: following the endpoints of Service %s/%s", replica_set.name, ref.namespace, ref.name)
            self._watch_service(ref.key)
        self._apply(followed)
        return True

    def sync(self, replica_sets: Iterable[ReplicaSet]) -> None:
        """Follow exactly these sets: new ones (a route added by a routing-file reload) are followed, gone ones
        forgotten (whoever dropped a set closes it; the channels of replicas that had left it close here)."""
        wanted = {id(s): s for s in replica_sets}
        for key in [k for k in self._followed if k not in wanted]:
            for replica, _ in self._followed.pop(key).retired.values():
                self._retire(replica)
        for replica_set in wanted.values():
            self.follow(replica_set)
        used = {ref.key for f in self._followed.values() for _, ref in f.configured if ref is not None}
        for service in [k for k in self._watches if k not in used]:  # a Service no route names any more
            self._watches.pop(service).stop()
            self._slices.pop(service, None)
            self._listed.pop(service, None)

    async def start(self, replica_sets: Callable[[], Iterable[ReplicaSet]], wait_s: float = 5.0) -> None:
        """Follow the sets ``replica_sets()`` returns, now and at every sweep (so routes added later are followed
        too); start the watches; wait up to ``wait_s`` for each Service's first list (until then, and if it does
        not come, its routes use their configured targets)."""
        self._loop = asyncio.get_running_loop()
        self._sets = replica_sets
        self.sync(replica_sets())
        for watcher in self._watches.values():
            watcher.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())
        pending = [(key, event) for key, event in self._listed.items() if not event.is_set()]
        if pending:
            _, not_done = await asyncio.wait([asyncio.create_task(e.wait()) for _, e in pending], timeout=wait_s)
            for task in not_done:
                task.cancel()
            missing = [f"{ns}/{name}" for (ns, name), event in pending if not event.is_set()]
            if missing:
                log.warning("no EndpointSlices listed yet for %s; using the configured targets", ", ".join(missing))

    def _watch_service(self, key: ServiceKey) -> None:
        if key in self._watches:
            return
        self._listed[key] = asyncio.Event()
        self._watches[key] = SliceWatch(
            self._api, key, lambda slices: self._from_thread(key, slices), watch_timeout_s=self._watch_timeout_s
        )
        if self._loop is not None:
            self._watches[key].start()

    def _from_thread(self, key: ServiceKey, slices: dict[str, SliceView]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._update, key, slices)

    def _update(self, key: ServiceKey, slices: dict[str, SliceView]) -> None:
        if key not in self._watches:  # no longer followed
            return
        self._slices[key] = slices
        self._listed[key].set()
        for followed in list(self._followed.values()):
            if any(ref is not None and ref.key == key for _, ref in followed.configured):
                self._apply(followed)

    def _apply(self, followed: _Followed) -> None:
        replica_set = followed.replica_set
        new = followed.compose(self._slices)
        old = replica_set.replicas
        if [id(r) for r in new] == [id(r) for r in old]:
            return
        replica_set.replicas = new
        log.info("%s: replicas %s", replica_set.name, ", ".join(r.target for r in new))
        kept = {id(r) for r in new}
        now = time.monotonic()
        for replica in old:
            if id(replica) not in kept:
                followed.retired[id(replica)] = (replica, now)
        for replica in new:
            followed.retired.pop(id(replica), None)
        self._sweep()

    def _sweep(self) -> None:
        """Close the channels of replicas that left their set, once their calls in flight are done. A call that
        chose its replicas before one left may still fail over to it: that opens a channel again, and the next
        sweep closes it the same way. Replicas gone for twice the drain time are forgotten."""
        now = time.monotonic()
        for followed in self._followed.values():
            for key, (replica, since) in list(followed.retired.items()):
                self._retire(replica)
                if now - since > 2 * self._drain_s and not replica.has_channel:
                    del followed.retired[key]

    def _retire(self, replica: Replica) -> None:
        channel = replica.detach_channel()
        if channel is None or self._loop is None:
            return
        task = self._loop.create_task(channel.close(self._drain_s))
        self._draining[channel] = task
        task.add_done_callback(lambda _: self._draining.pop(channel, None))

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                if self._sets is not None:
                    self.sync(self._sets())
                self._sweep()
            except Exception:  # a bug here must not end the sweeping
                log.exception("kubernetes discovery: sweep failed")

    async def close(self) -> None:
        """Stop the watches; close the channels still draining (their calls are cancelled) and those of replicas
        that left. The replicas still in their sets are closed with them (``ReplicaSet.close``)."""
        for watcher in self._watches.values():
            watcher.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for followed in self._followed.values():
            for replica, _ in followed.retired.values():
                if replica.has_channel:
                    await replica.close()
        draining = list(self._draining)
        await asyncio.gather(*(channel.close() for channel in draining), return_exceptions=True)
        await asyncio.gather(*self._draining.values(), return_exceptions=True)
        for watcher in self._watches.values():
            await asyncio.to_thread(watcher.join, 2.0)
        self._api_client.close()  # type: ignore[no-untyped-call]
