"""``modaverse cluster`` against the stand-in API server (tests/kube/apiserver.py; no API server can run in CI),
through the real ``kubernetes`` client and a kubeconfig file, as a user runs it.

The stand-in holds what the chart renders for a release (``helm template`` of values-full-gpu.yaml, with t2v's
autoscaling off), plus what the cluster adds: Deployment statuses, the HPAs KEDA makes for the ScaledObjects, the
current metrics of the HPAs, and the EndpointSlices of the Services. So ``status`` reads the model from the
variable the chart really sets, and ``routes`` the routing table the chart really renders."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modaverse.cli import main
from tests.helm.chart import EXAMPLES, FULLNAME, NAMESPACE, RELEASE, env_of, main_container, render
from tests.kube.apiserver import Endpoint, KubeApiServer, endpoint_slice

GATEWAY = f"{FULLNAME}-gateway"


def _keda_hpa(scaled_object: dict[str, Any]) -> dict[str, Any]:
    """The HPA KEDA creates for a ScaledObject (named keda-hpa-<name>, an External metric per trigger)."""
    spec = scaled_object["spec"]
    threshold = spec["triggers"][0]["metadata"]["threshold"]
    metric = {"name": "s0-prometheus", "selector": {"matchLabels": {"scaledobject.keda.sh/name": "x"}}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": f"keda-hpa-{scaled_object['metadata']['name']}",
            "namespace": NAMESPACE,
            "labels": {"scaledobject.keda.sh/name": scaled_object["metadata"]["name"]},
        },
        "spec": {
            "scaleTargetRef": spec["scaleTargetRef"],
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            "metrics": [
                {
                    "type": "External",
                    "external": {"metric": metric, "target": {"type": "AverageValue", "averageValue": threshold}},
                }
            ],
        },
        "status": {
            "currentReplicas": spec["minReplicaCount"],
            "desiredReplicas": spec["minReplicaCount"],
            "currentMetrics": [{"type": "External", "external": {"metric": metric, "current": {"averageValue": "3"}}}],
        },
    }


RENDER = (EXAMPLES["full-gpu"], ("generators.t2v.autoscaling.enabled=false",))


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[KubeApiServer]:
    server = KubeApiServer().start()
    rendered = render(*RENDER)
    # An autoscaled Deployment is rendered without replicas: its autoscaler has set them (to its minimum here).
    scaled = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
        for h in rendered.of_kind("HorizontalPodAutoscaler")
    }
    scaled |= {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"]["minReplicaCount"] for o in rendered.of_kind("ScaledObject")
    }
    for dep in rendered.of_kind("Deployment"):
        name = dep["metadata"]["name"]
        desired = dep["spec"].get("replicas", scaled.get(name, 1))
        ready = desired - 1 if name.endswith("-t2v") else desired  # t2v's pod is not ready yet
        spec = {**dep["spec"], "replicas": desired}
        server.put({**dep, "spec": spec, "status": {"replicas": desired, "readyReplicas": ready}})
    for cm in rendered.of_kind("ConfigMap"):
        server.put(cm)
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        current = {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45}}}
        server.put({**hpa, "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentMetrics": [current]}})
    for so in rendered.of_kind("ScaledObject"):
        server.put(_keda_hpa(so))
    port = 50053
    server.put(
        endpoint_slice(
            NAMESPACE,
            f"{FULLNAME}-gen-sd15",
            [Endpoint("10.0.0.1", pod="sd15-a"), Endpoint("10.0.0.2", ready=False, terminating=True, pod="sd15-b")],
            port,
        )
    )
    server.put(endpoint_slice(NAMESPACE, f"{FULLNAME}-encoder", [Endpoint("10.0.1.1", pod="enc-a")], 50051))
    server.kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
    yield server
    server.close()


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["cluster", "--kubeconfig", str(tmp_path / "kubeconfig"), "--release", RELEASE, *argv])
    captured = capsys.readouterr()
    return int(exit_.value.code or 0), captured.out, captured.err


def _row(out: str, name: str) -> str:
    rows = [line for line in out.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, out
    return rows[0]


def test_status_shows_each_component_as_the_chart_deployed_it(
    apiserver: KubeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(tmp_path, capsys, "status")
    assert code == 0 and not err
    rendered = render(*RENDER)
    assert out.splitlines()[0] == f"release {RELEASE} in namespace {NAMESPACE}"  # the kubeconfig context's namespace
    assert out.splitlines()[1].split() == ["COMPONENT", "READY", "AUTOSCALING", "GPUS", "IMAGE", "MODEL"]
    names = [line.split()[0] for line in out.splitlines()[2:]]
    assert names == ["encoder", "llm", "audioldm", "sd15", "t2v", "gateway"]

    sd15 = rendered.get("Deployment", f"{FULLNAME}-gen-sd15")
    row = _row(out, "sd15")
    assert env_of(main_container(sd15))["MODAVERSE_GENERATOR_MODEL"] in row  # the variable the chart sets
    assert main_container(sd15)["image"] in row
    scaled = rendered.get("ScaledObject", f"{FULLNAME}-gen-sd15")["spec"]
    low, high, threshold = (
        scaled["minReplicaCount"],
        scaled["maxReplicaCount"],
        scaled["triggers"][0]["metadata"]["threshold"],
    )
    assert f"keda {low}-{high} (now {low}) s0-prometheus 3/{threshold}" in row
    assert "1 nvidia.com/gpu" in row
    llm = rendered.get("Deployment", f"{FULLNAME}-llm")
    assert env_of(main_container(llm))["MODAVERSE_BASE_MODEL"] in _row(out, "llm")
    gateway = _row(out, "gateway")
    assert "hpa 2-8 (now 2) cpu 45%/70%" in gateway and gateway.split()[1] == "2/2"
    t2v = _row(out, "t2v")
    assert t2v.split()[1] == "0/1" and t2v.split()[2] == "-"  # one replica, not ready; no autoscaler


def test_scale_sets_replicas_through_the_scale_subresource(
    apiserver: KubeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(tmp_path, capsys, "scale", "t2v", "--replicas", "3")
    assert code == 0 and not err
    assert out.strip() == f"t2v: replicas 1 -> 3 (deployment {FULLNAME}-gen-t2v)"
    assert apiserver.get("Deployment", NAMESPACE, f"{FULLNAME}-gen-t2v")["spec"]["replicas"] == 3
    patches = [r for r in apiserver.requests if r.method == "PATCH"]
    assert [r.path for r in patches] == [f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{FULLNAME}-gen-t2v/scale"]

    # An autoscaled component: --replicas would be undone by its HPA.
    code, _, err = run(tmp_path, capsys, "scale", "gateway", "--replicas", "5")
    assert code == 2 and err.count("\n") == 1 and "autoscaled (hpa 2-8)" in err and "--min/--max" in err


def test_scale_bounds_patch_the_hpa_but_not_one_keda_owns(
    apiserver: KubeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(tmp_path, capsys, "scale", "gateway", "--min", "3", "--max", "10")
    assert code == 0 and not err
    assert out.startswith("gateway: autoscaling 2-8 -> 3-10 (hpa mv-modaverse-gateway")
    hpa = apiserver.get("HorizontalPodAutoscaler", NAMESPACE, GATEWAY)["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    code, out, _ = run(tmp_path, capsys, "scale", "gateway", "--max", "4")  # the other bound stays
    assert code == 0 and "3-10 -> 3-4" in out

    code, _, err = run(tmp_path, capsys, "scale", "sd15", "--max", "6")
    assert code == 2 and err.count("\n") == 1 and "scaled by KEDA" in err
    code, _, err = run(tmp_path, capsys, "scale", "gateway", "--min", "9")
    assert code == 2 and "1 <= min <= max" in err
    code, _, err = run(tmp_path, capsys, "scale", "sdxl", "--replicas", "1")
    assert code == 2 and err.startswith("error: no component 'sdxl' in release 'mv' (components: encoder, llm,")


def test_routes_show_each_route_with_its_endpoints_and_their_readiness(
    apiserver: KubeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(tmp_path, capsys, "routes")
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0] == f"release {RELEASE} in namespace {NAMESPACE}; gateway discovery: dns"
    assert lines[1].split() == ["ROUTE", "MODALITY", "DEFAULT", "MODEL", "TARGET", "ENDPOINTS"]
    assert [line.split()[0] for line in lines[2:]] == ["encoder", "llm", "audioldm", "sd15", "t2v"]
    sd15 = _row(out, "sd15")
    assert f"{FULLNAME}-gen-sd15:50053" in sd15 and " yes " in sd15
    assert sd15.endswith("10.0.0.1 (sd15-a) ready; 10.0.0.2 (sd15-b) terminating")
    assert _row(out, "encoder").endswith("10.0.1.1 (enc-a) ready")
    assert _row(out, "t2v").endswith(" none")  # no EndpointSlice: no pod yet


def test_errors_are_one_line_with_exit_code_2(
    apiserver: KubeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    apiserver.forbidden.add("deployments")
    code, out, err = run(tmp_path, capsys, "status")
    assert (code, out) == (2, "")
    assert err == (
        'error: forbidden: deployments.apps is forbidden: User "system:serviceaccount:ml:default" cannot list '
        'resource "deployments" in API group "apps" in the namespace "ml"\n'
    )
    apiserver.forbidden.clear()

    # A 404 from the API (here every path: the server URL has a prefix the API server does not serve).
    apiserver.kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
    config = (tmp_path / "kubeconfig").read_text().replace(apiserver.url, f"{apiserver.url}/nothing")
    (tmp_path / "kubeconfig").write_text(config)
    code, _, err = run(tmp_path, capsys, "status")
    assert (code, err) == (2, "error: not found: the server could not find the requested resource\n")

    # Nothing listening.
    (tmp_path / "kubeconfig").write_text(config.replace(apiserver.url + "/nothing", "http://127.0.0.1:1"))
    code, _, err = run(tmp_path, capsys, "routes")
    assert code == 2 and err.startswith("error: cannot reach the Kubernetes API at http://127.0.0.1:1: ")
    assert err.count("\n") == 1

    # No configuration at all: no kubeconfig in the standard places, not in a cluster.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["cluster", "status", "--release", RELEASE])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: no Kubernetes configuration: no kubeconfig at {tmp_path}/home/.kube/config")

    # A release with nothing deployed in the namespace.
    (tmp_path / "kubeconfig").write_text(config.replace(apiserver.url + "/nothing", apiserver.url))
    code, _, err = run(tmp_path, capsys, "status", "--namespace", "elsewhere")
    assert (code, err) == (2, "error: no Deployments of release 'mv' in namespace 'elsewhere'\n")


def test_without_the_kubernetes_client_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes -> ImportError
    with pytest.raises(SystemExit) as exit_:
        main(["cluster", "--release", RELEASE, "status"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: `modaverse cluster` needs the Kubernetes client: pip install 'modaverse[cluster]'\n"
    )


def test_the_sdk_and_its_command_do_not_import_the_kubernetes_client() -> None:
    code = "import sys, modaverse, modaverse.cli, modaverse.cluster; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_the_kubernetes_client_is_an_extra_of_the_sdk_and_a_dependency_of_the_gateway() -> None:
    root = Path(__file__).resolve().parents[3]
    sdk = tomllib.loads((root / "sdk" / "pyproject.toml").read_text())["project"]
    assert sdk["optional-dependencies"] == {"cluster": ["kubernetes>=37"], "eval": ["matplotlib>=3.8"]}
    gateway = tomllib.loads((root / "services" / "gateway" / "pyproject.toml").read_text())["project"]
    assert "kubernetes>=37" in gateway["dependencies"]
    assert '-e "sdk[cluster,eval]"' in (root / "Makefile").read_text()  # make install: the tests need both
