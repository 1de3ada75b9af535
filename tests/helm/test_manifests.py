"""Assertions on the rendered manifests: GPUs, scheduling, selectors, probes, routing, storage, TLS, policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from modaverse_gateway.metaresponse import OutputModality
from modaverse_gateway.routes import load_routes
from tests.helm.chart import (
    CHART,
    EXAMPLES,
    FULLNAME,
    NAMESPACE,
    Manifest,
    Rendered,
    containers,
    env_of,
    helm,
    iter_pod_templates,
    labels_match,
    main_container,
    render,
    render_error,
    render_example,
)

GPU_COMPONENTS = {"encoder", "llm", "generator"}


def component(obj: Manifest) -> str:
    label: str = obj["metadata"]["labels"]["app.kubernetes.io/component"]
    return label


def example_values(name: str) -> dict[str, Any]:
    """The example's values files merged the way helm does for the keys tests read (generators)."""
    merged: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for file in EXAMPLES[name]:
        layer = yaml.safe_load((CHART / file).read_text())
        for gen, spec in layer.get("generators", {}).items():
            merged["generators"].setdefault(gen, {}).update(spec)
    return merged


# GPUs, scheduling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["default", "full-gpu", "swap-image"])
def test_gpu_workloads_request_gpus_and_tolerate_gpu_taints(example: str) -> None:
    rendered = render_example(example)
    for dep, pod in iter_pod_templates(rendered):
        limits = main_container(dep)["resources"].get("limits", {})
        tolerations = pod["spec"].get("tolerations", [])
        if component(dep) in GPU_COMPONENTS:
            assert limits.get("nvidia.com/gpu") == 1, dep["metadata"]["name"]
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
            assert env_of(main_container(dep))["MODAVERSE_DEVICE"] == "cuda"
        else:
            assert "nvidia.com/gpu" not in limits
            assert not tolerations


def test_tiny_cpu_requests_no_gpu_anywhere() -> None:
    rendered = render_example("tiny-cpu")
    assert len(rendered.of_kind("Deployment")) == 7  # 6 services and the web front door
    for dep, pod in iter_pod_templates(rendered):
        for c in containers(dep):
            resources = c.get("resources", {})
            assert not any("gpu" in k for part in resources.values() for k in part), dep["metadata"]["name"]
        assert "tolerations" not in pod["spec"] and "runtimeClassName" not in pod["spec"]
        if component(dep) == "web":  # an HTTP client of the gateway: no models, no device (tests/helm/test_web.py)
            continue
        if component(dep) != "gateway":
            assert env_of(main_container(dep))["MODAVERSE_DEVICE"] == "cpu"
        assert env_of(main_container(dep))["MODAVERSE_PROFILE"] == "tiny"


def test_gpu_resource_name_count_and_node_placement_are_configurable() -> None:
    rendered = render(
        (),
        (
            "global.gpu.resourceName=amd.com/gpu",
            "llm.gpu.count=2",
            "global.gpu.runtimeClassName=nvidia",
            "global.gpu.nodeSelector.pool=gpu",
            "encoder.nodeSelector.zone=a",
            "encoder.gpu.resourceName=nvidia.com/mig-1g.10gb",
        ),
    )
    llm = rendered.get("Deployment", f"{FULLNAME}-llm")
    assert main_container(llm)["resources"]["limits"]["amd.com/gpu"] == 2
    encoder = rendered.get("Deployment", f"{FULLNAME}-encoder")
    assert main_container(encoder)["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == 1
    assert encoder["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu", "zone": "a"}
    assert encoder["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    gateway = rendered.get("Deployment", f"{FULLNAME}-gateway")
    assert "nodeSelector" not in gateway["spec"]["template"]["spec"]
    assert "runtimeClassName" not in gateway["spec"]["template"]["spec"]


# Selectors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_selectors_match_pod_labels(example: str) -> None:
    rendered = render_example(example)
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in rendered.of_kind("Deployment")}
    for dep in rendered.of_kind("Deployment"):
        assert labels_match(dep["spec"]["selector"]["matchLabels"], pods[dep["metadata"]["name"]])
    # Selectors select exactly one Deployment's pods (generators do not share selectors).
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in rendered.of_kind(kind):
            spec = obj["spec"]
            selector = spec["selector"]["matchLabels"] if kind == "PodDisruptionBudget" else spec["selector"]
            matched = [name for name, labels in pods.items() if labels_match(selector, labels)]
            assert len(matched) == 1, (kind, obj["metadata"]["name"], matched)
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for obj in rendered.of_kind(kind):
            target = obj["spec"]["scaleTargetRef"]
            assert target["name"] in pods and target.get("kind", "Deployment") == "Deployment"
            assert "replicas" not in rendered.get("Deployment", target["name"])["spec"]


def test_network_policies_admit_only_the_gateway_to_backends() -> None:
    rendered = render_example("full-gpu")
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in rendered.of_kind("Deployment")}
    backends = rendered.get("NetworkPolicy", f"{FULLNAME}-backends")
    exprs = backends["spec"]["podSelector"]["matchExpressions"]

    def selected(labels: dict[str, str]) -> bool:
        return all(labels.get(e["key"]) in e["values"] for e in exprs)

    covered = {name for name, labels in pods.items() if selected(labels)}
    assert covered == set(pods) - {f"{FULLNAME}-gateway"}
    grpc_rule, metrics_rule = backends["spec"]["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    (peer,) = grpc_rule["from"]
    gateway_pods = [n for n, labels in pods.items() if labels_match(peer["podSelector"]["matchLabels"], labels)]
    assert gateway_pods == [f"{FULLNAME}-gateway"]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    gateway = rendered.get("NetworkPolicy", f"{FULLNAME}-gateway")
    assert gateway["spec"]["ingress"][0] == {"ports": [{"port": "grpc", "protocol": "TCP"}]}


# Probes, shutdown, security ----------------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_grpc_probes_and_grace_period(example: str) -> None:
    rendered = render_example(example)
    for dep, pod in iter_pod_templates(rendered):
        if component(dep) == "web":  # HTTP probes (tests/helm/test_web.py)
            continue
        c = main_container(dep)
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        env = env_of(c)
        assert int(env["MODAVERSE_PORT"]) == port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": port}, (dep["metadata"]["name"], probe)
        startup = c["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        if component(dep) in GPU_COMPONENTS and example != "tiny-cpu":
            assert budget >= 1800, "model loading needs a long startupProbe"
        drain_and_grace = float(env["MODAVERSE_DRAIN_DELAY_S"]) + float(env["MODAVERSE_GRACE_PERIOD_S"])
        assert pod["spec"]["terminationGracePeriodSeconds"] > drain_and_grace


def test_grace_period_and_drain_delay_follow_values() -> None:
    rendered = render((), ("global.gracePeriodSeconds=120", "global.drainDelaySeconds=12"))
    for dep, pod in iter_pod_templates(rendered):
        env = env_of(main_container(dep))
        assert env["MODAVERSE_GRACE_PERIOD_S"] == "120"
        assert env["MODAVERSE_DRAIN_DELAY_S"] == "12"
        assert pod["spec"]["terminationGracePeriodSeconds"] == 12 + 120 + 15


def test_drain_delay_defaults_on() -> None:
    """Without a drain delay a terminating pod closes its port while Services still route new connections
    to it; the chart default keeps accepting (NOT_SERVING) for a few seconds first."""
    for dep, _ in iter_pod_templates(render((), ())):
        assert float(env_of(main_container(dep))["MODAVERSE_DRAIN_DELAY_S"]) >= 1


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_non_root_read_only_root_filesystem(example: str) -> None:
    rendered = render_example(example)
    for dep, pod in iter_pod_templates(rendered):
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        for c in containers(dep):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]] and "emptyDir" in volumes[mounts["/cache"]]


# Routing: one source of truth ------------------------------------------------------------------------------


def routes_of(rendered: Rendered) -> dict[str, Any]:
    cm = rendered.get("ConfigMap", f"{FULLNAME}-routes")
    table: dict[str, Any] = yaml.safe_load(cm["data"]["routes.yaml"])
    assert set(table) == {"generators"}
    generators: dict[str, Any] = table["generators"]
    return generators


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_routing_table_equals_generator_map(example: str) -> None:
    rendered = render_example(example)
    values = example_values(example)["generators"]
    routes = routes_of(rendered)
    assert set(routes) == set(values)
    services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
    for name, route in routes.items():
        spec = values[name]
        assert set(route) == {"modality", "endpoints", "default", "model"}
        assert route["modality"] == spec["modality"]
        assert route["model"] == spec["model"]
        assert route["default"] is bool(spec.get("default", False))
        svc_name = f"{FULLNAME}-gen-{name}"
        svc = services[svc_name]
        assert svc["spec"]["clusterIP"] == "None"
        grpc_port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
        assert route["endpoints"] == [f"dns:///{svc_name}.{NAMESPACE}.svc.cluster.local:{grpc_port}"]
        dep = rendered.get("Deployment", svc_name)
        env = env_of(main_container(dep))
        assert env["MODAVERSE_GENERATOR_KIND"] == f"text-to-{spec['modality']}"
        assert dep["spec"]["template"]["metadata"]["labels"]["modaverse.io/generator"] == name
    for modality in ("image", "video", "audio"):
        assert sum(1 for r in routes.values() if r["modality"] == modality and r["default"]) <= 1
    # The gateway mounts this ConfigMap and points MODAVERSE_ROUTES_FILE at it.
    gateway = rendered.get("Deployment", f"{FULLNAME}-gateway")
    env = env_of(main_container(gateway))
    assert env["MODAVERSE_ROUTES_FILE"] == "/etc/modaverse/routes/routes.yaml"
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes["routes"]["configMap"]["name"] == f"{FULLNAME}-routes"
    # It watches the file (no restart on a new table), so its pod template carries no checksum of it (test_swap.py).
    assert "checksum/routes" not in gateway["spec"]["template"]["metadata"].get("annotations", {})


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_routes_load_in_the_gateway(example: str, tmp_path: Path) -> None:
    """The rendered ConfigMap is read by the gateway's own loader (MODAVERSE_ROUTES_FILE)."""
    path = tmp_path / "routes.yaml"
    path.write_text(render_example(example).get("ConfigMap", f"{FULLNAME}-routes")["data"]["routes.yaml"])
    table = load_routes(path, "")
    assert set(table.routes) == set(example_values(example)["generators"])
    expected = "sdxl" if example == "swap-image" else "sd15"
    assert table.resolve(OutputModality.IMAGE).name == expected
    assert table.resolve(OutputModality.IMAGE, "sd15").model == example_values(example)["generators"]["sd15"]["model"]


def test_gateway_targets_are_headless_dns_services() -> None:
    rendered = render_example("full-gpu")
    env = env_of(main_container(rendered.get("Deployment", f"{FULLNAME}-gateway")))
    for key, svc_name, port in (
        ("MODAVERSE_ENCODER_TARGETS", f"{FULLNAME}-encoder", 50051),
        ("MODAVERSE_LLM_TARGETS", f"{FULLNAME}-llm", 50052),
    ):
        assert env[key] == f"dns:///{svc_name}.{NAMESPACE}.svc.cluster.local:{port}"
        svc = rendered.get("Service", svc_name)
        assert svc["spec"]["clusterIP"] == "None"
        assert {"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"} in svc[
            "spec"
        ]["ports"]
    public = rendered.get("Service", f"{FULLNAME}-gateway")
    assert public["spec"]["type"] == "LoadBalancer"
    assert [p["name"] for p in public["spec"]["ports"]] == ["grpc"]


def test_two_defaults_for_one_modality_are_refused() -> None:
    err = render_error("generators.sdxl.modality=image", "generators.sdxl.model=x/y", "generators.sdxl.default=true")
    assert "both default for modality image" in err


def test_disabled_generator_is_neither_deployed_nor_routed() -> None:
    rendered = render((), ("generators.t2v.enabled=false",))
    assert f"{FULLNAME}-gen-t2v" not in rendered.names("Deployment")
    assert "t2v" not in routes_of(rendered)


# Storage ---------------------------------------------------------------------------------------------------


def test_full_gpu_storage_existing_claim_and_downloads() -> None:
    rendered = render_example("full-gpu")
    for name in ("encoder", "llm"):
        volumes = rendered.get("Deployment", f"{FULLNAME}-{name}")["spec"]["template"]["spec"]["volumes"]
        models = next(v for v in volumes if v["name"] == "models")
        assert models["persistentVolumeClaim"] == {"claimName": "modaverse-models"}
    for gen, model in (
        ("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        ("t2v", "damo-vilab/text-to-video-ms-1.7b"),
        ("audioldm", "cvssp/audioldm-l-full"),
    ):
        dep = rendered.get("Deployment", f"{FULLNAME}-gen-{gen}")
        init = dep["spec"]["template"]["spec"]["initContainers"][0]
        assert init["command"][:2] == ["python", "-c"] and "snapshot_download" in init["command"][2]
        env = {e["name"]: e for e in init["env"]}
        assert json.loads(env["MODAVERSE_DOWNLOADS"]["value"]) == [{"repo": model, "dir": model}]
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
        assert env_of(main_container(dep))["MODAVERSE_GENERATOR_MODEL"] == f"/models/{model}"
        pvc = rendered.get("PersistentVolumeClaim", f"{FULLNAME}-gen-{gen}-models")
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_tiny_profile_builds_its_own_models() -> None:
    rendered = render_example("tiny-cpu")
    for dep in rendered.of_kind("Deployment"):
        assert "initContainers" not in dep["spec"]["template"]["spec"]
        assert "MODAVERSE_GENERATOR_MODEL" not in env_of(main_container(dep))
    assert not rendered.of_kind("PersistentVolumeClaim")


# Autoscaling -------------------------------------------------------------------------------------------------


def test_keda_scaled_objects_use_our_metrics_and_may_scale_generators_to_zero() -> None:
    rendered = render(EXAMPLES["full-gpu"], ("generators.t2v.autoscaling.minReplicas=0",))
    t2v = rendered.get("ScaledObject", f"{FULLNAME}-gen-t2v")
    assert t2v["spec"]["minReplicaCount"] == 0
    (trigger,) = t2v["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "modaverse_queue_depth" in trigger["metadata"]["query"]
    assert f'service="{FULLNAME}-gen-t2v"' in trigger["metadata"]["query"]
    # a generator at zero has no queue to measure: it wakes on the invocations the gateway holds for it
    assert 'modaverse_gateway_invocations_in_flight{namespace="ml",route="t2v"}' in trigger["metadata"]["query"]
    gateway_env = env_of(main_container(rendered.get("Deployment", f"{FULLNAME}-gateway")))
    assert gateway_env["MODAVERSE_GENERATOR_WAKE_S"] == "300"
    without_zero = render(EXAMPLES["full-gpu"])
    assert (
        env_of(main_container(without_zero.get("Deployment", f"{FULLNAME}-gateway")))["MODAVERSE_GENERATOR_WAKE_S"]
        == "0"
    )
    llm = rendered.get("ScaledObject", f"{FULLNAME}-llm")
    assert "modaverse_requests_in_flight" in llm["spec"]["triggers"][0]["metadata"]["query"]
    hpa = rendered.get("HorizontalPodAutoscaler", f"{FULLNAME}-gateway")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_encoder_cannot_scale_to_zero_and_hpa_cannot_either() -> None:
    assert "minimum" in render_error("encoder.autoscaling.enabled=true", "encoder.autoscaling.minReplicas=0")
    err = render_error(
        "generators.t2v.autoscaling.enabled=true",
        "generators.t2v.autoscaling.kind=hpa",
        "generators.t2v.autoscaling.minReplicas=0",
    )
    assert "HPA cannot scale to zero" in err


def test_service_monitor_selects_every_metrics_service() -> None:
    rendered = render_example("full-gpu")
    (monitor,) = rendered.of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = {
        s["metadata"]["name"] for s in rendered.of_kind("Service") if labels_match(selector, s["metadata"]["labels"])
    }
    assert selected == {f"{FULLNAME}-{n}" for n in ("encoder", "llm", "gateway-headless")} | {
        f"{FULLNAME}-gen-{g}" for g in ("sd15", "t2v", "audioldm")
    }
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


# TLS ---------------------------------------------------------------------------------------------------------

TLS_SETS = ("global.tls.enabled=true", "global.tls.secretName=internal-tls")


def test_backend_tls_mounts_secret_sets_env_and_probes_in_pod() -> None:
    rendered = render((), TLS_SETS)
    for dep, pod in iter_pod_templates(rendered):
        c = main_container(dep)
        env = env_of(c)
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        if component(dep) == "gateway":
            assert "MODAVERSE_TLS_CERT_FILE" not in env
            assert env["MODAVERSE_TLS_CA_FILE"] == "/etc/modaverse/upstream-tls/ca.crt"
            assert volumes["upstream-tls"]["secret"]["secretName"] == "internal-tls"
            assert c["readinessProbe"]["grpc"]
            continue
        assert env["MODAVERSE_TLS_CERT_FILE"] == "/etc/modaverse/tls/tls.crt"
        assert env["MODAVERSE_TLS_KEY_FILE"] == "/etc/modaverse/tls/tls.key"
        assert "MODAVERSE_TLS_CLIENT_CA_FILE" not in env
        assert volumes["tls"]["secret"]["secretName"] == "internal-tls"
        # The kubelet's gRPC probe speaks plaintext only: TLS servers are probed from inside the pod.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = c[probe]["exec"]["command"]
            assert command[:2] == ["python", "-c"] and "HealthStub" in command[2]


def test_mtls_requires_a_gateway_client_certificate() -> None:
    assert "gateway must present a client certificate" in render_error(*TLS_SETS, "global.tls.mtls=true")
    rendered = render(
        (), (*TLS_SETS, "global.tls.mtls=true", "gateway.tls.enabled=true", "gateway.tls.secretName=gw-tls")
    )
    encoder = env_of(main_container(rendered.get("Deployment", f"{FULLNAME}-encoder")))
    assert encoder["MODAVERSE_TLS_CLIENT_CA_FILE"] == "/etc/modaverse/tls/ca.crt"
    gateway = env_of(main_container(rendered.get("Deployment", f"{FULLNAME}-gateway")))
    assert gateway["MODAVERSE_TLS_CERT_FILE"] == "/etc/modaverse/tls/tls.crt"
    assert gateway["MODAVERSE_TLS_CA_FILE"] == "/etc/modaverse/upstream-tls/ca.crt"


def test_per_service_tls_override_and_missing_secret() -> None:
    rendered = render((), (*TLS_SETS, "llm.tls.secretName=llm-tls", "encoder.tls.enabled=false"))
    assert "MODAVERSE_TLS_CERT_FILE" not in env_of(main_container(rendered.get("Deployment", f"{FULLNAME}-encoder")))
    llm = rendered.get("Deployment", f"{FULLNAME}-llm")
    volumes = {v["name"]: v for v in llm["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "llm-tls"
    assert "no tls.secretName" in render_error("gateway.tls.enabled=true")


def test_gateway_tls_probe_checks_the_configured_server_name() -> None:
    rendered = render(
        (), ("gateway.tls.enabled=true", "gateway.tls.secretName=gw", "gateway.tls.serverName=chat.example.org")
    )
    c = main_container(rendered.get("Deployment", f"{FULLNAME}-gateway"))
    assert "'grpc.ssl_target_name_override','chat.example.org'" in c["readinessProbe"]["exec"]["command"][2]
    assert env_of(c)["MODAVERSE_TLS_CERT_FILE"] == "/etc/modaverse/tls/tls.crt"
    assert "MODAVERSE_TLS_CLIENT_CA_FILE" not in env_of(c)


def test_grpc_ingress() -> None:
    rendered = render((), ("ingress.enabled=true", "ingress.host=chat.example.org"))
    (ingress,) = rendered.of_kind("Ingress")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{FULLNAME}-gateway", "port": {"name": "grpc"}}


def test_long_release_and_generator_names_stay_valid_and_distinct() -> None:
    long_gen = "a" * 20
    out = helm(
        "template",
        "a-very-long-release-name-for-modaverse-serving",
        str(CHART),
        "--set",
        f"generators.{long_gen}.modality=audio",
        "--set",
        f"generators.{long_gen}.model=x/y",
        "--set",
        f"generators.{long_gen[:-1]}b.modality=audio",
        "--set",
        f"generators.{long_gen[:-1]}b.model=x/z",
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names))
    for _, name in names:
        assert len(name) <= 63 and name[-1].isalnum(), name
