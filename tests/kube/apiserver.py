"""A stand-in for the Kubernetes API server, for tests: no API server can run in CI (no cluster, no etcd, no
container runtime), so the gateway's EndpointSlice discovery and ``modaverse cluster`` are tested against this
real HTTP server, through the real ``kubernetes`` client.

It speaks the API's wire format for what those two use: JSON objects with ``apiVersion``, ``kind`` and
``metadata.resourceVersion`` (one counter over every object, as etcd's revision); lists (``<Kind>List`` with the
list's resourceVersion); watches (``?watch=true``: newline-delimited ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|
ERROR, "object": …}`` over a chunked response, from a resourceVersion, ended after ``timeoutSeconds``); label
selectors (``k=v``, ``k!=v``, ``k``); ``get``; ``patch`` (strategic/merge patch as a JSON merge patch, JSON
patch); the Deployment ``scale`` subresource (an ``autoscaling/v1`` Scale); errors as ``Status`` objects
(403 Forbidden, 404 NotFound, 410 Gone). Resources: ConfigMaps, EndpointSlices (discovery.k8s.io/v1),
Deployments (apps/v1), HorizontalPodAutoscalers (autoscaling/v2).

Controls for the cases a watcher must survive: :meth:`KubeApiServer.bookmark` (a BOOKMARK on every open watch
that asked for bookmarks), :meth:`KubeApiServer.expire` (history compacted: open watches get an ERROR event with
a 410 Status and end, as the real server does when its watch cache moves past them, or are dropped and the next
watch from a stale resourceVersion is answered with HTTP 410), :meth:`KubeApiServer.drop_watches` (connections
cut without the closing chunk). ``requests`` records what clients asked, for assertions.

Not modelled: authentication (a bearer token is recorded, never checked), RBAC (``forbidden`` refuses whole
resources), field selectors, pagination, server-side apply, admission and defaulting, controllers (a scaled
Deployment's status changes only when a test sets it).
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group_version: str
    plural: str
    kind: str


RESOURCES = {
    r.plural: r
    for r in (
        Resource("v1", "configmaps", "ConfigMap"),
        Resource("discovery.k8s.io/v1", "endpointslices", "EndpointSlice"),
        Resource("apps/v1", "deployments", "Deployment"),
        Resource("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    )
}
BY_KIND = {r.kind: r for r in RESOURCES.values()}
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    authorization: str = ""

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass
class _Event:
    rv: int
    type: str
    resource: Resource
    namespace: str
    obj: Obj


@dataclass
class _Watch:
    resource: Resource
    namespace: str
    selector: str
    bookmarks: bool
    cursor: int  # index in the history of the next event to send
    bookmark_pending: bool = False
    gone: bool = False
    drop: bool = False


def status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def matches(labels: Mapping[str, str], selector: str) -> bool:
    """An equality-based label selector: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma-separated."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _quantities_as_strings(node: Any) -> None:
    """Resource quantities come back from the API server as strings (``nvidia.com/gpu: 1`` reads ``"1"``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "resources" and isinstance(value, dict):
                for part in ("limits", "requests"):
                    if isinstance(value.get(part), dict):
                        value[part] = {k: str(v) for k, v in value[part].items()}
            else:
                _quantities_as_strings(value)
    elif isinstance(node, list):
        for item in node:
            _quantities_as_strings(item)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 (what strategic merge patch amounts to for the scalar fields patched here)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Obj, ops: Sequence[Mapping[str, Any]]) -> Obj:
    """RFC 6902 add / replace / remove."""
    doc = copy.deepcopy(target)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in str(op["path"]).split("/")[1:]]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] in ("add", "replace"):
            if isinstance(node, list) and key == "-":
                node.append(op["value"])
            else:
                node[key] = op["value"]
        elif op["op"] == "remove":
            del node[key]
        else:
            raise ValueError(f"unsupported JSON patch op {op['op']!r}")
    return doc


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that cut its connection (the gateway stopping a watch) is not an error here


class KubeApiServer:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._history: list[_Event] = []
        self._rv = 100
        self._compacted = 0  # watches from a resourceVersion below this are 410 Gone
        self._gone_as_http = False
        self._watches: list[_Watch] = []
        self._closing = False
        self.requests: list[Request] = []
        self.forbidden: set[str] = set()  # resources (plurals) every request for gets 403
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="kube-apiserver", daemon=True
        )

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> KubeApiServer:
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, path: Path, namespace: str = "default", token: str = "stand-in-token") -> Path:
        """A kubeconfig file whose current context is this server (what ``kubectl`` and the client read)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": token}}],
            "contexts": [
                {"name": "stand-in", "context": {"cluster": "stand-in", "user": "tester", "namespace": namespace}}
            ],
            "current-context": "stand-in",
        }
        path.write_text(json.dumps(config))  # YAML is a superset of JSON
        return path

    # --- objects ---------------------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def put(self, obj: Obj) -> Obj:
        """Create or replace an object (ADDED or MODIFIED for watchers); returns it as stored."""
        resource = BY_KIND[obj["kind"]]
        meta = obj["metadata"]
        key = (resource.plural, meta["namespace"], meta["name"])
        with self._cond:
            old = self._objects.get(key)
            return self._store(resource, key, copy.deepcopy(obj), "MODIFIED" if old else "ADDED", old)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        resource = BY_KIND[kind]
        with self._cond:
            obj = self._objects.pop((resource.plural, namespace, name))
            self._rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._history.append(_Event(self._rv, "DELETED", resource, namespace, obj))
            self._cond.notify_all()

    def get(self, kind: str, namespace: str, name: str) -> Obj:
        with self._cond:
            return copy.deepcopy(self._objects[(BY_KIND[kind].plural, namespace, name)])

    def _store(self, resource: Resource, key: tuple[str, str, str], obj: Obj, kind: str, old: Obj | None) -> Obj:
        _quantities_as_strings(obj)
        self._rv += 1
        obj["apiVersion"], obj["kind"] = resource.group_version, resource.kind
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        meta.setdefault("uid", (old or {}).get("metadata", {}).get("uid") or str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._objects[key] = obj
        self._history.append(_Event(self._rv, kind, resource, key[1], copy.deepcopy(obj)))
        self._cond.notify_all()
        return copy.deepcopy(obj)

    # --- controls --------------------------------------------------------------------------------------
    def open_watches(self) -> int:
        with self._cond:
            return len(self._watches)

    def bookmark(self) -> int:
        """A BOOKMARK (the current resourceVersion) on every open watch that allowed bookmarks; returns it."""
        with self._cond:
            for w in self._watches:
                w.bookmark_pending = w.bookmarks
            self._cond.notify_all()
            return self._rv

    def advance(self) -> int:
        """Move the resourceVersion on, as writes to other objects do; returns the new one."""
        with self._cond:
            self._rv += 1
            return self._rv

    def expire(self, *, http: bool = False) -> None:
        """Compact the history: every resourceVersion seen so far is too old to watch from. Open watches get an
        ERROR event with a 410 Status and end (``http=False``), or are cut, and then a watch from a stale
        resourceVersion is answered with HTTP 410 (``http=True``)."""
        with self._cond:
            self._rv += 1
            self._compacted = self._rv
            self._gone_as_http = http
            for w in self._watches:
                if http:
                    w.drop = True
                else:
                    w.gone = True
            self._cond.notify_all()

    def drop_watches(self) -> None:
        """Cut every open watch's connection, without the closing chunk (a proxy or node going away)."""
        with self._cond:
            for w in self._watches:
                w.drop = True
            self._cond.notify_all()

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the stand-in API server did not see what was expected")
            time.sleep(0.01)

    def watch_requests(self, plural: str = "endpointslices") -> list[Request]:
        return [r for r in list(self.requests) if r.is_watch and r.path.endswith(plural)]

    def list_requests(self, plural: str = "endpointslices") -> list[Request]:
        return [r for r in list(self.requests) if not r.is_watch and r.method == "GET" and r.path.endswith(plural)]

    # --- HTTP ------------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self, "GET")

            def do_PATCH(self) -> None:
                server._serve(self, "PATCH")

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "PATCH" else b""
        request = Request(method, url.path, query, h.headers.get("Authorization", ""))
        self.requests.append(request)
        m = _PATH.match(url.path)
        resource = RESOURCES.get(m["plural"]) if m else None
        if m is None or resource is None or resource.group_version != (m["core"] or f"{m['group']}/{m['version']}"):
            self._send(h, 404, status(404, "NotFound", "the server could not find the requested resource"))
            return
        ns, name, sub = m["ns"], m["name"], m["sub"]
        group = resource.group_version.rpartition("/")[0]
        what = f"{resource.plural}.{group}" if group else resource.plural
        if resource.plural in self.forbidden:
            verb = {"GET": "watch" if request.is_watch else ("get" if name else "list"), "PATCH": "patch"}[method]
            message = (
                f'{what} is forbidden: User "system:serviceaccount:{ns}:default" cannot {verb} resource '
                f'"{resource.plural}{"/" + sub if sub else ""}" in API group "{group}" in the namespace "{ns}"'
            )
            self._send(h, 403, status(403, "Forbidden", message))
            return
        if name is None:
            if method != "GET":
                self._send(h, 405, status(405, "MethodNotAllowed", "the server does not allow this method"))
            elif request.is_watch:
                self._watch(h, resource, ns, query)
            else:
                self._list(h, resource, ns, query.get("labelSelector", ""))
            return
        if sub not in (None, "scale") or (sub == "scale" and resource.kind != "Deployment"):
            self._send(h, 404, status(404, "NotFound", "the server could not find the requested resource"))
            return
        with self._cond:
            obj = self._objects.get((resource.plural, ns, name))
            if obj is None:
                self._send(h, 404, status(404, "NotFound", f'{what} "{name}" not found'))
                return
            if method == "PATCH":
                patch = json.loads(body or b"null")
                content_type = h.headers.get("Content-Type", "")
                view = self._scale(obj) if sub else obj
                try:
                    patched = json_patch(view, patch) if "json-patch" in content_type else merge_patch(view, patch)
                except (KeyError, IndexError, ValueError, TypeError) as exc:
                    self._send(h, 422, status(422, "Invalid", f"the patch could not be applied: {exc}"))
                    return
                if sub:
                    patched = merge_patch(obj, {"spec": {"replicas": int(patched["spec"]["replicas"])}})
                patched["metadata"] = {**obj["metadata"], **{"name": name, "namespace": ns}}
                patched["metadata"].pop("resourceVersion", None)
                obj = self._store(resource, (resource.plural, ns, name), patched, "MODIFIED", obj)
            reply = self._scale(obj) if sub else copy.deepcopy(obj)
        self._send(h, 200, reply)

    @staticmethod
    def _scale(deployment: Obj) -> Obj:
        meta = deployment["metadata"]
        selector = deployment.get("spec", {}).get("selector", {}).get("matchLabels", {})
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
            "spec": {"replicas": deployment.get("spec", {}).get("replicas", 1)},
            "status": {
                "replicas": deployment.get("status", {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            },
        }

    def _list(self, h: BaseHTTPRequestHandler, resource: Resource, ns: str, selector: str) -> None:
        with self._cond:
            items = [
                {k: v for k, v in copy.deepcopy(obj).items() if k not in ("apiVersion", "kind")}
                for (plural, namespace, _), obj in sorted(self._objects.items())
                if plural == resource.plural
                and namespace == ns
                and matches(obj["metadata"].get("labels", {}), selector)
            ]
            rv = self._rv
        reply = {
            "apiVersion": resource.group_version,
            "kind": f"{resource.kind}List",
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }
        self._send(h, 200, reply)

    def _watch(self, h: BaseHTTPRequestHandler, resource: Resource, ns: str, query: Mapping[str, str]) -> None:
        selector = query.get("labelSelector", "")
        rv = query.get("resourceVersion", "")
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        initial: list[Obj] = []
        with self._cond:
            stale = rv not in ("", "0") and int(rv) < self._compacted
            if stale and self._gone_as_http:
                self._send(h, 410, status(410, "Expired", f"too old resource version: {rv} ({self._compacted})"))
                return
            w = _Watch(resource, ns, selector, bookmarks, len(self._history), gone=stale)
            if rv in ("", "0"):  # no resourceVersion: the current state first, as synthetic ADDED events
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(obj)}
                    for (plural, namespace, _), obj in sorted(self._objects.items())
                    if plural == resource.plural
                    and namespace == ns
                    and matches(obj["metadata"].get("labels", {}), selector)
                ]
            elif not stale:
                w.cursor = next((i for i, e in enumerate(self._history) if e.rv > int(rv)), len(self._history))
            self._watches.append(w)
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            self._chunks(h, initial)
            deadline = time.monotonic() + timeout
            while True:
                with self._cond:
                    while not (
                        self._closing
                        or w.drop
                        or w.gone
                        or w.bookmark_pending
                        or w.cursor < len(self._history)
                        or time.monotonic() >= deadline
                    ):
                        self._cond.wait(max(0.0, deadline - time.monotonic()))
                    events = [
                        {"type": e.type, "object": copy.deepcopy(e.obj)}
                        for e in self._history[w.cursor :]
                        if e.resource == w.resource
                        and e.namespace == w.namespace
                        and matches(e.obj["metadata"].get("labels", {}), w.selector)
                    ]
                    w.cursor = len(self._history)
                    if w.bookmark_pending:
                        w.bookmark_pending = False
                        meta = {"resourceVersion": str(self._rv)}
                        events.append(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": resource.kind,
                                    "apiVersion": resource.group_version,
                                    "metadata": meta,
                                },
                            }
                        )
                    drop, gone = w.drop, w.gone
                    if gone:
                        message = f"too old resource version: {rv} ({self._compacted})"
                        events.append({"type": "ERROR", "object": status(410, "Expired", message)})
                    done = drop or gone or self._closing or time.monotonic() >= deadline
                if drop:
                    h.close_connection = True
                    h.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._chunks(h, events)
                if done:
                    h.wfile.write(b"0\r\n\r\n")
                    h.wfile.flush()
                    return
        except OSError:  # the client went away
            h.close_connection = True
        finally:
            with self._cond:
                self._watches.remove(w)

    @staticmethod
    def _chunks(h: BaseHTTPRequestHandler, events: Iterable[Obj]) -> None:
        for event in events:
            data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        h.wfile.flush()

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()


# --- objects as the chart and the controllers write them ---------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a slice: an address and its conditions (as the EndpointSlice controller sets them: a
    terminating pod is not ready; it may still be serving while it drains)."""

    address: str
    ready: bool = True
    serving: bool | None = None
    terminating: bool = False
    pod: str = ""


def endpoint_slice(
    namespace: str,
    service: str,
    endpoints: Sequence[Endpoint],
    port: int,
    *,
    name: str = "",
    port_name: str = "grpc",
    address_type: str = "IPv4",
    extra_ports: Sequence[tuple[str, int]] = (("metrics", 9090),),
) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service}-abcde",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": str(uuid.uuid4())}],
        },
        "addressType": address_type,
        "endpoints": [
            {
                "addresses": [e.address],
                "conditions": {
                    "ready": e.ready,
                    "serving": e.ready if e.serving is None else e.serving,
                    "terminating": e.terminating,
                },
                **({"targetRef": {"kind": "Pod", "namespace": namespace, "name": e.pod}} if e.pod else {}),
            }
            for e in endpoints
        ],
        "ports": [
            {"name": n, "port": p, "protocol": "TCP", "appProtocol": "grpc" if n == "grpc" else "http"}
            for n, p in ((port_name, port), *extra_ports)
        ],
    }


@dataclass
class Component:
    """What the chart renders for one component, as the stand-in's objects (a Deployment, an optional HPA)."""

    name: str
    component: str
    image: str = "modaverse/generators:0.1.0"
    replicas: int = 1
    ready: int = 1
    env: dict[str, str] = field(default_factory=dict)
    gpus: int = 0
    generator: str = ""


def deployment(namespace: str, release: str, c: Component, gpu_resource: str = "nvidia.com/gpu") -> Obj:
    labels = {
        "app.kubernetes.io/name": "modaverse",
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/component": c.component,
        "app.kubernetes.io/part-of": "modaverse",
        **({"modaverse.io/generator": c.generator} if c.generator else {}),
    }
    limits: dict[str, Any] = {"memory": "2Gi", **({gpu_resource: str(c.gpus)} if c.gpus else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": c.name, "namespace": namespace, "labels": labels, "generation": 1},
        "spec": {
            "replicas": c.replicas,
            "selector": {"matchLabels": {k: v for k, v in labels.items() if k != "app.kubernetes.io/part-of"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": c.component,
                            "image": c.image,
                            "env": [{"name": k, "value": v} for k, v in c.env.items()],
                            "resources": {"requests": {"cpu": "500m"}, "limits": limits},
                        }
                    ]
                },
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": c.replicas,
            "readyReplicas": c.ready,
            "availableReplicas": c.ready,
            "updatedReplicas": c.replicas,
        },
    }


def hpa(
    namespace: str,
    release: str,
    target: str,
    component: str,
    *,
    min_replicas: int,
    max_replicas: int,
    current: int,
    metric: Obj | None = None,
    current_metric: Obj | None = None,
    name: str = "",
) -> Obj:
    metric = metric or {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
    }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name or target,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/instance": release, "app.kubernetes.io/component": component},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [metric],
        },
        "status": {
            "currentReplicas": current,
            "desiredReplicas": current,
            "currentMetrics": [current_metric] if current_metric else [],
        },
    }


def config_map(namespace: str, name: str, labels: Mapping[str, str], data: Mapping[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "data": dict(data),
    }
