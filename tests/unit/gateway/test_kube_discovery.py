"""Kubernetes discovery (kube_discovery.py) against the stand-in API server (tests/kube/apiserver.py), through the
real ``kubernetes`` client: which targets name a Service, what an EndpointSlice makes of them, a replica set that
follows a Service's endpoints as they change, a removed endpoint whose channel closes only once its call in
flight is done, the watch surviving a bookmark, a 410 Gone (as an ERROR event and as HTTP 410) and a cut
connection, and the pods' channels dialled under the Service's name over TLS.

The backends here are gRPC health servers on 127.0.0.1 and 127.0.0.2 with one port, as two pods of a Service
are (one slice, one port, two addresses)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from kubernetes import client

from modaverse_gateway.discovery import ChannelConfig
from modaverse_gateway.kube_discovery import KubernetesDiscovery, ServiceRef, SliceView
from modaverse_gateway.replicas import Replica, ReplicaSet
from modaverse_runtime.errors import FailedPrecondition
from tests.integration.in_process import free_port
from tests.kube.apiserver import Endpoint, KubeApiServer, endpoint_slice
from tests.pki import write_pki

NS, SERVICE = "ml", "mv-modaverse-gen-image"
FIRST, SECOND = "127.0.0.1", "127.0.0.2"


def test_targets_that_name_a_service() -> None:
    ref = ServiceRef.parse(f"dns:///{SERVICE}.{NS}.svc.cluster.local:50053")
    assert ref == ServiceRef(NS, SERVICE, 50053, f"{SERVICE}.{NS}.svc.cluster.local")
    assert ServiceRef.parse("dns://10.0.0.10:53/gen.ml.svc:80") == ServiceRef("ml", "gen", 80, "gen.ml.svc")
    assert ServiceRef.parse("gen.ml.svc.example.org:1") == ServiceRef("ml", "gen", 1, "gen.ml.svc.example.org")
    for static in ("localhost:50051", "127.0.0.1:1", "dns:///gen:50053", "ipv4:10.0.0.1:5", "gen.ml.svc", "x.y.z:1"):
        assert ServiceRef.parse(static) is None, static


def _view(obj: dict[str, object]) -> SliceView:
    parsed = client.V1EndpointSlice.from_dict(obj)  # as the client reads it off the wire
    assert parsed is not None
    return SliceView.of(parsed)


def test_a_slice_gives_its_ready_endpoints_on_the_service_port() -> None:
    endpoints = [
        Endpoint("10.0.0.1"),
        Endpoint("10.0.0.2", ready=False),  # starting
        Endpoint("10.0.0.3", ready=False, serving=True, terminating=True),  # draining: no new calls
    ]
    view = _view(endpoint_slice(NS, SERVICE, endpoints, 50053))
    assert view.ready_targets(50053) == ["ipv4:10.0.0.1:50053"]
    # A Service port that maps to another target port: the endpoints' port named grpc.
    assert view.ready_targets(80) == ["ipv4:10.0.0.1:50053"]
    six = _view(endpoint_slice(NS, SERVICE, [Endpoint("fd00::1")], 50053, address_type="IPv6", extra_ports=()))
    assert six.ready_targets(1) == ["ipv6:[fd00::1]:50053"]
    # Unset conditions read as the API defines them: ready.
    bare = endpoint_slice(NS, SERVICE, [Endpoint("10.0.0.9")], 50053)
    bare["endpoints"][0].pop("conditions")
    assert _view(bare).ready_targets(50053) == ["ipv4:10.0.0.9:50053"]


@pytest.fixture
def apiserver() -> Iterator[KubeApiServer]:
    server = KubeApiServer().start()
    yield server
    server.close()


@pytest.fixture
async def pods() -> AsyncIterator[tuple[int, dict[str, health.aio.HealthServicer]]]:
    """Two health servers, one port, two loopback addresses: two pods of one Service."""
    port = free_port()
    servers, servicers = [], {}
    for host in (FIRST, SECOND):
        server = aio.server()
        servicers[host] = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicers[host], server)
        assert server.add_insecure_port(f"{host}:{port}") == port
        await server.start()
        servers.append(server)
    yield port, servicers
    for server in servers:
        await server.stop(0)


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll on the loop; the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def _targets(replica_set: ReplicaSet) -> list[str]:
    return [r.target for r in replica_set.replicas]


async def _follow(
    apiserver: KubeApiServer, tmp_path: Path, port: int, drain_s: float = 30.0
) -> tuple[KubernetesDiscovery, ReplicaSet]:
    discovery = KubernetesDiscovery.from_settings(apiserver.kubeconfig(tmp_path / "kubeconfig", NS), drain_s)
    replica_set = ReplicaSet("generator image", [f"dns:///{SERVICE}.{NS}.svc.cluster.local:{port}"])
    await discovery.start(lambda: [replica_set], wait_s=5)
    return discovery, replica_set


async def test_a_replica_set_follows_the_ready_endpoints_and_drains_the_ones_that_leave(
    apiserver: KubeApiServer, pods: tuple[int, dict[str, health.aio.HealthServicer]], tmp_path: Path
) -> None:
    port, servicers = pods
    first, second = f"ipv4:{FIRST}:{port}", f"ipv4:{SECOND}:{port}"
    apiserver.put(endpoint_slice(NS, SERVICE, [Endpoint(FIRST)], port))
    discovery, replica_set = await _follow(apiserver, tmp_path, port)
    try:
        assert _targets(replica_set) == [first]  # listed before start() returned
        assert all(r.authorization == "Bearer stand-in-token" for r in apiserver.requests)  # the kubeconfig's user
        await asyncio.to_thread(apiserver.wait_for, apiserver.watch_requests)
        watch = apiserver.watch_requests()[0]
        assert watch.query["allowWatchBookmarks"] == "true"
        assert watch.query["labelSelector"] == f"kubernetes.io/service-name={SERVICE}"

        apiserver.put(endpoint_slice(NS, SERVICE, [Endpoint(FIRST), Endpoint(SECOND)], port))
        assert await _until(lambda: _targets(replica_set) == [first, second]) < 2.0
        added = replica_set.replicas[1]
        assert isinstance(added, Replica) and added.authority == f"{SERVICE}.{NS}.svc.cluster.local"

        # A call in flight on the second pod (a health Watch stream stays open), then the pod starts terminating.
        stream = health_pb2_grpc.HealthStub(added.channel).Watch(health_pb2.HealthCheckRequest(service="x"))
        assert (await stream.read()).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        apiserver.put(
            endpoint_slice(NS, SERVICE, [Endpoint(FIRST), Endpoint(SECOND, ready=False, terminating=True)], port)
        )
        await _until(lambda: _targets(replica_set) == [first])
        assert added._channel is None  # no new call can start on it ...
        await servicers[SECOND].set("x", health_pb2.HealthCheckResponse.SERVING)
        assert (await stream.read()).status == health_pb2.HealthCheckResponse.SERVING  # ... the one in flight goes on
        assert discovery.draining == 1
        stream.cancel()  # its last call ends: the channel closes
        await _until(lambda: discovery.draining == 0)

        # No ready endpoint at all: the configured target (the headless Service's DNS name) again.
        apiserver.put(endpoint_slice(NS, SERVICE, [Endpoint(FIRST, ready=False)], port))
        await _until(lambda: _targets(replica_set) == [f"dns:///{SERVICE}.{NS}.svc.cluster.local:{port}"])
        apiserver.delete("EndpointSlice", NS, f"{SERVICE}-abcde")
        apiserver.put(endpoint_slice(NS, SERVICE, [Endpoint(SECOND)], port, name=f"{SERVICE}-xyz"))
        await _until(lambda: _targets(replica_set) == [second])
    finally:
        await discovery.close()
        await replica_set.close()


async def test_the_watch_survives_bookmarks_gone_and_cut_connections(apiserver: KubeApiServer, tmp_path: Path) -> None:
    port = 50053
    slices = {"a": [Endpoint("10.0.0.1")], "b": [Endpoint("10.0.0.1"), Endpoint("10.0.0.2")]}
    apiserver.put(endpoint_slice(NS, SERVICE, slices["a"], port))
    discovery, replica_set = await _follow(apiserver, tmp_path, port)
    watcher = discovery.watch_of(NS, SERVICE)
    state = "a"

    async def change() -> None:
        nonlocal state
        state = "b" if state == "a" else "a"
        apiserver.put(endpoint_slice(NS, SERVICE, slices[state], port))
        want = [f"ipv4:{e.address}:{port}" for e in slices[state]]
        await _until(lambda: _targets(replica_set) == want)

    try:
        assert watcher.lists == 1

        # BOOKMARK: the resourceVersion moves on, and the next watch starts from it.
        await asyncio.to_thread(apiserver.wait_for, lambda: apiserver.open_watches() == 1)
        apiserver.advance()  # writes elsewhere
        marked = apiserver.bookmark()
        await _until(lambda: watcher.resource_version == str(marked))
        apiserver.drop_watches()
        await asyncio.to_thread(apiserver.wait_for, lambda: len(apiserver.watch_requests()) == 2)
        assert apiserver.watch_requests()[-1].query["resourceVersion"] == str(marked)
        await change()
        assert watcher.lists == 1  # a cut connection watches again from where it was, no list

        # 410 Gone as an ERROR event on the open watch: list again, then watch on.
        apiserver.expire()
        await _until(lambda: watcher.lists == 2)
        await change()

        # 410 Gone as the HTTP status of the next watch (its resourceVersion is too old).
        apiserver.expire(http=True)
        await _until(lambda: watcher.lists == 3)
        await change()
        assert watcher.lists == 3
    finally:
        await discovery.close()
        await replica_set.close()
    assert not watcher.alive  # stopped at once, though blocked reading its watch


async def test_pods_are_dialled_under_the_service_name_over_tls(tmp_path: Path) -> None:
    """The pods' certificates name the Service, not the pod's address: the channel checks the name."""
    name = f"{SERVICE}.{NS}.svc.cluster.local"
    ca, cert, key = write_pki(tmp_path, dns_names=[name], ip_addresses=[])
    cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    server = aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    await server.start()
    config = ChannelConfig(credentials=grpc.ssl_channel_credentials(root_certificates=ca.read_bytes()))
    named = Replica(f"ipv4:127.0.0.1:{port}", config, authority=name)
    unnamed = Replica(f"ipv4:127.0.0.1:{port}", config)
    try:
        reply = await health_pb2_grpc.HealthStub(named.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(aio.AioRpcError) as refused:  # the address is not in the certificate
            await health_pb2_grpc.HealthStub(unnamed.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await named.close()
        await unnamed.close()
        await server.stop(0)


def test_a_missing_cluster_configuration_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(FailedPrecondition, match="service account"):
        KubernetesDiscovery.from_settings(None, 1.0)
    with pytest.raises(FailedPrecondition, match="kubeconfig"):
        KubernetesDiscovery.from_settings(tmp_path / "missing", 1.0)


async def test_a_forbidden_watch_keeps_the_configured_target_and_later_routes_are_followed(
    apiserver: KubeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = 50053
    configured = f"dns:///{SERVICE}.{NS}.svc.cluster.local:{port}"
    apiserver.put(endpoint_slice(NS, SERVICE, [Endpoint("10.0.0.1")], port))
    apiserver.forbidden.add("endpointslices")  # the chart's Role is missing
    discovery = KubernetesDiscovery.from_settings(apiserver.kubeconfig(tmp_path / "kubeconfig", NS), 30.0)
    sets = [ReplicaSet("generator image", [configured])]
    await discovery.start(lambda: list(sets), wait_s=0.3)
    try:
        assert _targets(sets[0]) == [configured]  # the route still works, through DNS
        await _until(lambda: "API error 403: endpointslices.discovery.k8s.io is forbidden" in caplog.text)
        apiserver.forbidden.clear()  # the Role is added: picked up on the next try (backoff 0.5 s, 1 s, ...)
        await _until(lambda: _targets(sets[0]) == [f"ipv4:10.0.0.1:{port}"], timeout=10)

        # A route added by a routing-file reload (a new replica set) is followed within a sweep.
        other = "mv-modaverse-gen-video"
        apiserver.put(endpoint_slice(NS, other, [Endpoint("10.0.0.7")], port))
        sets.append(ReplicaSet("generator video", [f"dns:///{other}.{NS}.svc:{port}"]))
        await _until(lambda: _targets(sets[1]) == [f"ipv4:10.0.0.7:{port}"])
        assert discovery.services == {(NS, SERVICE), (NS, other)}
        watcher = discovery.watch_of(NS, other)
        sets.pop()  # ... and a removed one's watch stops
        await _until(lambda: discovery.services == {(NS, SERVICE)} and not watcher.alive)
    finally:
        await discovery.close()
        for replica_set in sets:
            await replica_set.close()
