"""``modaverse cluster``: a Helm release of the chart as the Kubernetes API shows it, and its scaling.

- ``status``: each component (encoder, llm, gateway, web, one per generator): ready/desired replicas, its
  autoscaler (an HPA's min/max/current and metric, also the HPA KEDA makes for a ScaledObject), GPUs per pod,
  image, and the model (from the variable the chart sets: MODAVERSE_GENERATOR_MODEL, MODAVERSE_BASE_MODEL,
  MODAVERSE_IMAGEBIND_CHECKPOINT).
- ``scale COMPONENT --replicas N`` (the Deployment's ``scale`` subresource) or ``--min/--max`` (patches its HPA).
- ``routes``: the gateway's routing table (the release's routes ConfigMap) and the encoder and LLM, each with its
  Service's endpoints and their readiness, from its EndpointSlices.

The release's objects are found by the chart's labels (``app.kubernetes.io/instance=<release>``), in
``--namespace`` (default: the kubeconfig context's). Configuration from ``--kubeconfig``/``--context``, else
``KUBECONFIG`` or ``~/.kube/config``, else the pod's service account. It needs the ``kubernetes`` client
(``pip install 'modaverse[cluster]'``), imported only when the command runs: the SDK does not depend on it.
Errors (no configuration, 401/403, 404, an unreachable API server) are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
GENERATOR = "modaverse.io/generator"
SERVICE_NAME = "kubernetes.io/service-name"
KEDA_LABEL = "scaledobject.keda.sh/name"
# The variable the chart sets with each component's model (helm/modaverse/templates/backends.yaml).
MODEL_ENV = {
    "generator": ("MODAVERSE_GENERATOR_MODEL",),
    "llm": ("MODAVERSE_BASE_MODEL",),
    "encoder": ("MODAVERSE_IMAGEBIND_CHECKPOINT",),
}
ORDER = {"encoder": 0, "llm": 1, "generator": 2, "gateway": 3, "web": 4}
INSTALL_HINT = "`modaverse cluster` needs the Kubernetes client: pip install 'modaverse[cluster]'"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ClusterError(Exception):
    """A one-line reason the command cannot go on (exit code 2)."""


def _connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every action takes, before or after its name (``cluster --release mv status`` or
    ``cluster status --release mv``): after it, they default to nothing so as not to undo the ones before."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--namespace", "-n", default=default(None), help="the release's namespace (default: the context's)"
    )
    parser.add_argument(
        "--release",
        default=default(os.environ.get("MODAVERSE_RELEASE")),
        help="the Helm release (or MODAVERSE_RELEASE)",
    )
    parser.add_argument(
        "--kubeconfig", default=default(None), help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", default=default(None), help="kubeconfig context (default: its current one)")


def add_parser(sub: Any) -> None:
    """``modaverse cluster …`` on the command's subparsers."""
    cluster = sub.add_parser("cluster", help="a Helm release on Kubernetes: status, scale, routes")
    _connection_options(cluster, suppress=False)
    actions = cluster.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="each component: replicas, autoscaling, GPUs, image, model")
    scale = actions.add_parser("scale", help="set a component's replicas, or its autoscaler's bounds")
    scale.add_argument("component", help="encoder, llm, gateway, web, a generator's name, or a Deployment's name")
    scale.add_argument("--replicas", type=int, default=None, help="replicas (the Deployment's scale subresource)")
    scale.add_argument("--min", type=int, default=None, dest="min_replicas", help="the HPA's minReplicas")
    scale.add_argument("--max", type=int, default=None, dest="max_replicas", help="the HPA's maxReplicas")
    routes = actions.add_parser("routes", help="the gateway's routes and each one's endpoints with their readiness")
    for action in (status, scale, routes):
        _connection_options(action, suppress=True)
    cluster.set_defaults(handler=run)


def run(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not args.release:
        print("error: which release? give --release NAME (or set MODAVERSE_RELEASE)", file=sys.stderr)
        return 2
    # urllib3 logs a warning per connection retry: the one-line error below says it all.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        cluster = Cluster.connect(args.kubeconfig, args.context, args.namespace, args.release)
        try:
            action: Callable[[Cluster, argparse.Namespace], list[str]] = ACTIONS[args.action]
            lines = action(cluster, args)
        finally:
            cluster.close()
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, file=out)
    return 0


# --- the API ------------------------------------------------------------------------------------------------


@dataclass
class Component:
    name: str  # what the user types: encoder, llm, gateway, web, or the generator's name
    kind: str  # the component label: encoder, llm, generator, gateway, web
    deployment: Any  # V1Deployment
    hpa: Any = None  # V2HorizontalPodAutoscaler targeting it, if any

    @property
    def env(self) -> dict[str, str]:
        return {e.name: e.value for e in _container(self.deployment).env or () if e.value is not None}


@dataclass
class Cluster:
    api: Any  # ApiClient
    namespace: str
    release: str
    _components: list[Component] | None = field(default=None, repr=False)

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None, release: str) -> Cluster:
        from kubernetes import client, config

        path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        files = [p for p in path.split(os.pathsep) if p]  # KUBECONFIG may list several, merged
        if kubeconfig and not os.path.isfile(kubeconfig):
            raise ClusterError(f"no kubeconfig at {kubeconfig}")
        try:
            if any(os.path.isfile(p) for p in files):
                api = config.new_client_from_config(config_file=path, context=context)  # type: ignore[no-untyped-call]
                if namespace is None:
                    contexts, active = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
                    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
                    namespace = ((chosen or {}).get("context") or {}).get("namespace")
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                api = client.ApiClient(configuration)
                if namespace is None and IN_CLUSTER_NAMESPACE.is_file():
                    namespace = IN_CLUSTER_NAMESPACE.read_text().strip()
            else:
                raise ClusterError(
                    f"no Kubernetes configuration: no kubeconfig at {path} (set KUBECONFIG or --kubeconfig) and "
                    "not running in a cluster"
                )
        except config.ConfigException as exc:
            raise ClusterError(f"the Kubernetes configuration cannot be used: {_one_line(exc)}") from None
        return cls(api, namespace or "default", release)

    def close(self) -> None:
        self.api.close()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call; its failures become one-line ClusterErrors."""
        from kubernetes.client import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=30, **kwargs)
        except ApiException as exc:
            message = _status_message(exc)
            if exc.status == 401:
                raise ClusterError(f"unauthorized: {message} (check the kubeconfig's credentials)") from None
            if exc.status == 403:
                raise ClusterError(f"forbidden: {message}") from None
            if exc.status == 404:
                raise ClusterError(f"not found: {message}") from None
            raise ClusterError(f"the API server answered {exc.status}: {message}") from None
        except HTTPError as exc:
            host = self.api.configuration.host
            raise ClusterError(f"cannot reach the Kubernetes API at {host}: {_one_line(exc)}") from None

    def components(self) -> list[Component]:
        if self._components is not None:
            return self._components
        from kubernetes import client

        apps, autoscaling = client.AppsV1Api(self.api), client.AutoscalingV2Api(self.api)
        deployments = self.call(
            apps.list_namespaced_deployment, self.namespace, label_selector=f"{INSTANCE}={self.release}"
        ).items
        if not deployments:
            raise ClusterError(f"no Deployments of release {self.release!r} in namespace {self.namespace!r}")
        hpas = self.call(autoscaling.list_namespaced_horizontal_pod_autoscaler, self.namespace).items
        by_target = {h.spec.scale_target_ref.name: h for h in hpas if h.spec.scale_target_ref.kind == "Deployment"}
        found = []
        for dep in deployments:
            labels = dep.metadata.labels or {}
            kind = labels.get(COMPONENT, "")
            name = labels.get(GENERATOR, "") if kind == "generator" else kind
            found.append(Component(name or dep.metadata.name, kind, dep, by_target.get(dep.metadata.name)))
        found.sort(key=lambda c: (ORDER.get(c.kind, 9), c.name))
        self._components = found
        return found

    def component(self, name: str) -> Component:
        components = self.components()
        for c in components:
            if name in (c.name, c.deployment.metadata.name) or c.deployment.metadata.name.endswith(f"-{name}"):
                return c
        known = ", ".join(c.name for c in components)
        raise ClusterError(f"no component {name!r} in release {self.release!r} (components: {known})")


# --- status -----------------------------------------------------------------------------------------------


def status(cluster: Cluster, args: argparse.Namespace) -> list[str]:
    rows = [("COMPONENT", "READY", "AUTOSCALING", "GPUS", "IMAGE", "MODEL")]
    for c in cluster.components():
        dep = c.deployment
        desired = dep.spec.replicas if dep.spec.replicas is not None else 1
        ready = (dep.status.ready_replicas if dep.status else None) or 0
        rows.append((c.name, f"{ready}/{desired}", _autoscaling(c), _gpus(dep), _container(dep).image or "", _model(c)))
    return [f"release {cluster.release} in namespace {cluster.namespace}", *_table(rows)]


def _container(dep: Any) -> Any:
    containers = dep.spec.template.spec.containers
    component = (dep.metadata.labels or {}).get(COMPONENT)
    return next((c for c in containers if c.name == component), containers[0])


def _model(c: Component) -> str:
    env = c.env
    for key in MODEL_ENV.get(c.kind, ()):
        if env.get(key):
            return env[key]
    if c.kind in MODEL_ENV and env.get("MODAVERSE_PROFILE") == "tiny":
        return "(tiny profile)"
    return "-" if c.kind not in MODEL_ENV else "(default)"


def _gpus(dep: Any) -> str:
    limits = (_container(dep).resources.limits if _container(dep).resources else None) or {}
    gpus = [f"{count} {name}" for name, count in sorted(limits.items()) if name.endswith("/gpu") and str(count) != "0"]
    return ", ".join(gpus) or "-"


def _autoscaling(c: Component) -> str:
    hpa = c.hpa
    if hpa is None:
        return "-"
    keda = KEDA_LABEL in (hpa.metadata.labels or {}) or hpa.metadata.name.startswith("keda-hpa-")
    current = hpa.status.current_replicas if hpa.status and hpa.status.current_replicas is not None else "?"
    text = f"{'keda' if keda else 'hpa'} {hpa.spec.min_replicas or 1}-{hpa.spec.max_replicas} (now {current})"
    metrics = [_metric(m, (hpa.status.current_metrics or []) if hpa.status else []) for m in hpa.spec.metrics or []]
    return " ".join([text, *metrics])


def _metric(spec: Any, current: Sequence[Any]) -> str:
    """``cpu 45%/70%``, ``in_flight 3/16``: the metric, its current value (``?`` before the first reading) and
    its target."""
    kind = spec.type
    source = getattr(spec, _SOURCE.get(kind, ""), None)
    if source is None:
        return str(kind)
    name = source.name if kind in ("Resource", "ContainerResource") else source.metric.name
    now = next((getattr(m, _SOURCE[kind]) for m in current if m.type == kind and _same(m, spec, kind)), None)
    if source.target.type == "Utilization":
        value = now.current.average_utilization if now is not None else None
        return f"{name} {_or_unknown(value)}%/{source.target.average_utilization}%"
    target = source.target.average_value or source.target.value
    value = (now.current.average_value or now.current.value) if now is not None else None
    return f"{name} {_or_unknown(value)}/{target}"


_SOURCE = {
    "Resource": "resource",
    "ContainerResource": "container_resource",
    "Pods": "pods",
    "External": "external",
    "Object": "object",
}


def _same(status: Any, spec: Any, kind: str) -> bool:
    a, b = getattr(status, _SOURCE[kind]), getattr(spec, _SOURCE[kind])
    if kind in ("Resource", "ContainerResource"):
        return bool(a.name == b.name)
    return bool(a.metric.name == b.metric.name)


def _or_unknown(value: object) -> str:
    return "?" if value is None else str(value)


# --- scale ------------------------------------------------------------------------------------------------


def scale(cluster: Cluster, args: argparse.Namespace) -> list[str]:
    from kubernetes import client

    bounds = args.min_replicas is not None or args.max_replicas is not None
    if (args.replicas is None) == (not bounds):
        raise ClusterError("scale: give --replicas N, or --min and/or --max (not both kinds)")
    for value in (args.replicas, args.min_replicas, args.max_replicas):
        if value is not None and value < 0:
            raise ClusterError("scale: replica counts cannot be negative")
    c = cluster.component(args.component)
    name = c.deployment.metadata.name
    if args.replicas is not None:
        if c.hpa is not None:
            raise ClusterError(
                f"{c.name} is autoscaled ({_autoscaling(c).split(' (')[0]}): it would undo --replicas; use --min/--max"
            )
        apps = client.AppsV1Api(cluster.api)
        before = cluster.call(apps.read_namespaced_deployment_scale, name, cluster.namespace).spec.replicas
        after = cluster.call(
            apps.patch_namespaced_deployment_scale, name, cluster.namespace, {"spec": {"replicas": args.replicas}}
        ).spec.replicas
        return [f"{c.name}: replicas {before} -> {after} (deployment {name})"]
    hpa = c.hpa
    if hpa is None:
        raise ClusterError(f"{c.name} has no autoscaler: use --replicas (or enable autoscaling in the chart's values)")
    if KEDA_LABEL in (hpa.metadata.labels or {}) or hpa.metadata.name.startswith("keda-hpa-"):
        raise ClusterError(
            f"{c.name} is scaled by KEDA, which owns its HPA: set its autoscaling.minReplicas/maxReplicas in the "
            "chart's values (helm upgrade)"
        )
    low = args.min_replicas if args.min_replicas is not None else hpa.spec.min_replicas or 1
    high = args.max_replicas if args.max_replicas is not None else hpa.spec.max_replicas
    if low < 1 or low > high:
        raise ClusterError(f"scale: an HPA needs 1 <= min <= max (asked for min {low}, max {high})")
    autoscaling = client.AutoscalingV2Api(cluster.api)
    patched = cluster.call(
        autoscaling.patch_namespaced_horizontal_pod_autoscaler,
        hpa.metadata.name,
        cluster.namespace,
        {"spec": {"minReplicas": low, "maxReplicas": high}},
    )
    return [
        f"{c.name}: autoscaling {hpa.spec.min_replicas or 1}-{hpa.spec.max_replicas} -> "
        f"{patched.spec.min_replicas}-{patched.spec.max_replicas} (hpa {hpa.metadata.name}; a helm upgrade sets "
        "the chart's values again)"
    ]


# --- routes -----------------------------------------------------------------------------------------------


def routes(cluster: Cluster, args: argparse.Namespace) -> list[str]:
    import yaml
    from kubernetes import client

    core, discovery = client.CoreV1Api(cluster.api), client.DiscoveryV1Api(cluster.api)
    maps = cluster.call(
        core.list_namespaced_config_map,
        cluster.namespace,
        label_selector=f"{INSTANCE}={cluster.release},{COMPONENT}=gateway",
    ).items
    table = next((m for m in maps if "routes.yaml" in (m.data or {})), None)
    if table is None:
        raise ClusterError(f"no routing table (a ConfigMap with routes.yaml) of release {cluster.release!r}")
    generators = (yaml.safe_load(table.data["routes.yaml"]) or {}).get("generators") or {}
    gateway = next((c for c in cluster.components() if c.kind == "gateway"), None)
    env = gateway.env if gateway is not None else {}

    entries: list[tuple[str, str, str, str, list[str]]] = []
    for key, what in (("MODAVERSE_ENCODER_TARGETS", "encoder"), ("MODAVERSE_LLM_TARGETS", "llm")):
        targets = [t.strip() for t in env.get(key, "").split(",") if t.strip()]
        entries.append((what, "-", "", "", targets))
    for name, route in sorted(generators.items()):
        entries.append(
            (
                name,
                str(route.get("modality", "")),
                "yes" if route.get("default") else "",
                str(route.get("model") or ""),
                [str(t) for t in route.get("endpoints") or []],
            )
        )
    rows = [("ROUTE", "MODALITY", "DEFAULT", "MODEL", "TARGET", "ENDPOINTS")]
    for name, modality, default, model, targets in entries:
        for target in targets or ["-"]:
            rows.append((name, modality, default, model, _short(target), _endpoints(cluster, discovery, target)))
    mode = env.get("MODAVERSE_DISCOVERY", "dns")
    return [f"release {cluster.release} in namespace {cluster.namespace}; gateway discovery: {mode}", *_table(rows)]


def _service(target: str) -> tuple[str, str, int] | None:
    """(namespace, service, port) of a target that names a Service (``dns:///<svc>.<ns>.svc…:<port>``)."""
    rest = target.split("///", 1)[1] if target.startswith("dns:///") else target
    host, _, port = rest.rpartition(":")
    labels = host.split(".")
    if not port.isdigit() or len(labels) < 3 or labels[2] != "svc":
        return None
    return labels[1], labels[0], int(port)


def _short(target: str) -> str:
    service = _service(target)
    return f"{service[1]}:{service[2]}" if service else target


def _endpoints(cluster: Cluster, discovery: Any, target: str) -> str:
    service = _service(target)
    if service is None:
        return "(not a Service)"
    namespace, name, _ = service
    slices = cluster.call(
        discovery.list_namespaced_endpoint_slice, namespace, label_selector=f"{SERVICE_NAME}={name}"
    ).items
    found = []
    for item in slices:
        for endpoint in item.endpoints or ():
            conditions = endpoint.conditions
            ready = conditions is None or conditions.ready is not False
            terminating = conditions is not None and conditions.terminating is True
            state = "terminating" if terminating else ("ready" if ready else "not ready")
            pod = f" ({endpoint.target_ref.name})" if endpoint.target_ref and endpoint.target_ref.name else ""
            found.append(f"{','.join(endpoint.addresses)}{pod} {state}")
    return "; ".join(sorted(found)) or "none"


ACTIONS: dict[str, Callable[[Cluster, argparse.Namespace], list[str]]] = {
    "status": status,
    "scale": scale,
    "routes": routes,
}


def _table(rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _status_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or exc.status)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
