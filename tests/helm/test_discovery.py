"""gateway.discovery: dns (the default) renders no API access at all; kubernetes gives the gateway, and only it, a
ServiceAccount that may get/list/watch EndpointSlices in the release's namespace, mounts its token, and sets
MODAVERSE_DISCOVERY; every target the gateway is given then names one of the release's Services, on its grpc port,
as kube_discovery.py reads them. Both modes validate against the Kubernetes schemas (test_k8s_schemas.py)."""

from __future__ import annotations

import os

import pytest
import yaml

from modaverse_gateway.kube_discovery import ServiceRef
from modaverse_gateway.settings import GatewaySettings
from modaverse_runtime.settings import comma_list
from tests.helm.chart import EXAMPLES, FULLNAME, NAMESPACE, env_of, iter_pod_templates, main_container, render

KUBERNETES = ("gateway.discovery=kubernetes",)
RBAC_KINDS = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_dns_discovery_renders_no_api_access(example: str) -> None:
    rendered = render(EXAMPLES[example])
    assert not [d for d in rendered.docs if d["kind"] in RBAC_KINDS]
    assert f"{FULLNAME}-gateway" not in rendered.names("ServiceAccount")
    for dep, pod in iter_pod_templates(rendered):
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert "MODAVERSE_DISCOVERY" not in env_of(main_container(dep))


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_kubernetes_discovery_lets_the_gateway_alone_watch_endpointslices(example: str) -> None:
    rendered = render(EXAMPLES[example], KUBERNETES)
    name = f"{FULLNAME}-gateway"
    account = rendered.get("ServiceAccount", name)
    assert account["metadata"]["namespace"] == NAMESPACE and account["automountServiceAccountToken"] is False
    role = rendered.get("Role", name)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    binding = rendered.get("RoleBinding", name)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
    assert not [d for d in rendered.docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]

    for dep, pod in iter_pod_templates(rendered):
        spec = pod["spec"]
        if dep["metadata"]["name"] == name:
            assert spec["serviceAccountName"] == name and spec["automountServiceAccountToken"] is True
            assert env_of(main_container(dep))["MODAVERSE_DISCOVERY"] == "kubernetes"
        else:  # everything else keeps the shared account, without a token
            assert spec["serviceAccountName"] != name and spec["automountServiceAccountToken"] is False


def test_every_gateway_target_names_a_rendered_service_on_its_grpc_port(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render(EXAMPLES["full-gpu"], KUBERNETES)
    env = {k: v for k, v in env_of(main_container(rendered.get("Deployment", f"{FULLNAME}-gateway"))).items()}
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("MODAVERSE_")]:
            patch.delenv(key)
        for key, value in env.items():
            if key.startswith("MODAVERSE_"):
                patch.setenv(key, value)
        settings = GatewaySettings()
    assert settings.discovery == "kubernetes" and settings.kubeconfig is None  # in-cluster: the mounted token
    routes = yaml.safe_load(rendered.get("ConfigMap", f"{FULLNAME}-routes")["data"]["routes.yaml"])["generators"]
    targets = [*comma_list(settings.encoder_targets), *comma_list(settings.llm_targets)]
    targets += [t for route in routes.values() for t in route["endpoints"]]
    assert len(targets) == 2 + len(routes) >= 4
    for target in targets:
        ref = ServiceRef.parse(target)
        assert ref is not None and ref.namespace == NAMESPACE, target
        service = rendered.get("Service", ref.name)
        grpc = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc and grpc[0]["port"] == ref.port, target
