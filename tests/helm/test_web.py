"""The optional web front door (``web.enabled``): what it renders, the gateway it calls, its probes against the
real web app's routes, TLS and tokens, and the NetworkPolicies around it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modaverse_web.app import create_app
from modaverse_web.settings import WebSettings
from tests.helm.chart import (
    CHART,
    EXAMPLES,
    FULLNAME,
    NAMESPACE,
    Manifest,
    Rendered,
    env_of,
    helm,
    labels_match,
    main_container,
    render,
    render_error,
)

WEB = f"{FULLNAME}-web"
ON = ("web.enabled=true",)
GATEWAY_TLS = ("gateway.tls.enabled=true", "gateway.tls.secretName=gw-tls")


def web_objects(rendered: Rendered) -> set[tuple[str, str]]:
    return {
        (d["kind"], d["metadata"]["name"])
        for d in rendered.docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "web"
        or "-web" in d["metadata"]["name"]
    }


def web_container(rendered: Rendered) -> Manifest:
    return main_container(rendered.get("Deployment", WEB))


def pod_labels(rendered: Rendered) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in rendered.of_kind("Deployment")}


# On only when asked -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(set(EXAMPLES) - {"tiny-cpu"}))
def test_web_is_off_unless_enabled(example: str) -> None:
    rendered = render(EXAMPLES[example])
    assert web_objects(rendered) == set()
    gateway_policy = rendered.get("NetworkPolicy", f"{FULLNAME}-gateway")
    assert "web" not in str(gateway_policy)


def test_the_tiny_cpu_example_has_the_playground() -> None:
    assert ("Deployment", WEB) in web_objects(render(EXAMPLES["tiny-cpu"]))
    assert web_objects(render(EXAMPLES["tiny-cpu"], ("web.enabled=false",))) == set()


def test_enabled_web_renders_deployment_services_pdb_and_policy_and_an_ingress_only_when_asked() -> None:
    rendered = render((), ON)
    assert web_objects(rendered) == {
        ("Deployment", WEB),
        ("Service", WEB),
        ("Service", f"{WEB}-headless"),
        ("PodDisruptionBudget", WEB),
        ("NetworkPolicy", WEB),
    }
    with_ingress = render((), (*ON, "web.ingress.enabled=true", "web.ingress.host=chat.example.org"))
    assert web_objects(with_ingress) - web_objects(rendered) == {("Ingress", WEB)}
    # the gateway's gRPC Ingress is a separate switch
    assert [i["metadata"]["name"] for i in with_ingress.of_kind("Ingress")] == [WEB]
    # nothing else changes when the web front door is switched on (gatewayFrom is empty: no policy change)
    before, after = render(()).keyed(), rendered.keyed()
    assert {k for k in before if before[k] != after[k]} == set()
    no_policy = render((), (*ON, "networkPolicy.enabled=false"))
    assert ("NetworkPolicy", WEB) not in web_objects(no_policy)


def test_helm_lint_strict_with_web() -> None:
    proc = helm("lint", "--strict", str(CHART), "--set", "web.enabled=true", "--set", "web.ingress.enabled=true")
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_a_release_without_web_values_renders() -> None:
    """`helm upgrade --reuse-values` from a chart without `web` keeps the old values: no `web` key at all."""
    rendered = render((), ("web=null",))
    assert web_objects(rendered) == set()


def test_web_runs_modaverse_web_serve_from_its_own_image() -> None:
    rendered = render((), (*ON, "global.imageRegistry=registry.example.com/", "web.image.tag=1.2.3"))
    c = web_container(rendered)
    assert c["image"] == "registry.example.com/modaverse/web:1.2.3"
    assert c["command"] == ["modaverse-web", "serve"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = env_of(c)
    assert ports == {"http": 8080, "metrics": 9090}
    assert env["MODAVERSE_PORT"] == "8080" and env["MODAVERSE_METRICS_PORT"] == "9090"
    svc = rendered.get("Service", WEB)
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    pods = pod_labels(rendered)
    for name in (WEB, f"{WEB}-headless"):
        selected = [
            n for n, labels in pods.items() if labels_match(rendered.get("Service", name)["spec"]["selector"], labels)
        ]
        assert selected == [WEB]


# The gateway it calls ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "domain", "port"),
    [((), "cluster.local", 50050), (("gateway.service.port=443", "clusterDomain=k8s.example"), "k8s.example", 443)],
)
def test_web_calls_the_gateway_service(sets: tuple[str, ...], domain: str, port: int) -> None:
    rendered = render((), (*ON, *sets))
    env = env_of(web_container(rendered))
    gateway_svc = rendered.get("Service", f"{FULLNAME}-gateway")
    assert env["MODAVERSE_GATEWAY"] == f"{FULLNAME}-gateway.{NAMESPACE}.svc.{domain}:{port}"
    (svc_port,) = gateway_svc["spec"]["ports"]
    assert svc_port["port"] == port and svc_port["targetPort"] == "grpc"
    # ... which forwards to the gateway pods' gRPC port
    gateway = rendered.get("Deployment", f"{FULLNAME}-gateway")
    assert labels_match(gateway_svc["spec"]["selector"], gateway["spec"]["template"]["metadata"]["labels"])
    assert "grpc" in {p["name"] for p in main_container(gateway)["ports"]}
    assert env["MODAVERSE_GATEWAY_TLS"] == "false" and "MODAVERSE_TLS_CA_FILE" not in env


def test_web_without_the_gateway_needs_an_explicit_address() -> None:
    assert "set web.env.MODAVERSE_GATEWAY" in render_error(*ON, "gateway.enabled=false")
    rendered = render((), (*ON, "gateway.enabled=false", "web.env.MODAVERSE_GATEWAY=gw.example.org:443"))
    assert env_of(web_container(rendered))["MODAVERSE_GATEWAY"] == "gw.example.org:443"


# Probes: the real app's endpoints ---------------------------------------------------------------------------


def settings_from(rendered: Rendered, monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> WebSettings:
    """WebSettings as the pod reads them (files the chart mounts replaced by ``files``); unknown keys fail."""
    env = {k: v for k, v in env_of(web_container(rendered)).items() if k.startswith("MODAVERSE_")}
    known = {f"MODAVERSE_{name.upper()}" for name in WebSettings.model_fields}
    assert set(env) <= known, sorted(set(env) - known)
    with monkeypatch.context() as patch:
        for key in os.environ:
            if key.startswith("MODAVERSE_"):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, str(files.get(key, value)))
        return WebSettings()


def test_probes_hit_the_web_apps_health_endpoints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The rendered probes' paths, sent (without a token, as the kubelet does) to the real app configured from the
    rendered env with API tokens on: liveness/startup answer 200, readiness 200 and 503 while draining."""
    rendered = render((), (*ON, "web.auth.secretName=web-tokens"))
    c = web_container(rendered)
    probes = {name: c[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in probes.values():
        assert probe["scheme"] == "HTTP"
        assert ports[probe["port"]] == int(env_of(c)["MODAVERSE_PORT"])
    tokens = tmp_path / "tokens"
    tokens.write_text("alice:0123456789abcdef-secret\n")
    settings = settings_from(rendered, monkeypatch, {"MODAVERSE_AUTH_TOKENS_FILE": tokens})
    assert settings.auth_tokens_file == tokens and settings.port == 8080
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/v1/models").status_code == 401  # the API does need a token ...
        for name, probe in probes.items():
            assert client.get(probe["path"]).status_code == 200, name  # ... the probes do not
        app.state.web.draining = True  # SIGTERM: readiness fails, liveness does not
        assert client.get(probes["readinessProbe"]["path"]).status_code == 503
        assert client.get(probes["livenessProbe"]["path"]).status_code == 200
    assert probes["readinessProbe"]["path"] != probes["livenessProbe"]["path"]


def test_drain_and_grace_follow_the_chart() -> None:
    rendered = render((), (*ON, "global.gracePeriodSeconds=40", "global.drainDelaySeconds=7"))
    env = env_of(web_container(rendered))
    assert env["MODAVERSE_GRACE_PERIOD_S"] == "40" and env["MODAVERSE_DRAIN_DELAY_S"] == "7"
    assert rendered.get("Deployment", WEB)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 40 + 7 + 15


# TLS and tokens ---------------------------------------------------------------------------------------------


def volumes_and_mounts(rendered: Rendered) -> tuple[dict[str, Manifest], dict[str, str]]:
    pod = rendered.get("Deployment", WEB)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    return volumes, mounts


def test_gateway_tls_and_tokens_reach_the_web_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rendered = render(
        (),
        (
            *ON,
            *GATEWAY_TLS,
            "web.gatewayToken.secretName=web-gw-token",
            "web.gatewayToken.key=value",
            "web.auth.secretName=web-tokens",
            "web.forwardToken=false",
        ),
    )
    env = env_of(web_container(rendered))
    volumes, mounts = volumes_and_mounts(rendered)
    # the gateway's certificate is verified with the CA in the gateway's own TLS Secret
    assert env["MODAVERSE_GATEWAY_TLS"] == "true"
    assert env["MODAVERSE_TLS_CA_FILE"] == f"{mounts['gateway-tls']}/ca.crt"
    assert volumes["gateway-tls"]["secret"]["secretName"] == "gw-tls"
    assert volumes["gateway-tls"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert env["MODAVERSE_GATEWAY_TOKEN_FILE"] == f"{mounts['gateway-token']}/token"
    assert volumes["gateway-token"]["secret"]["items"] == [{"key": "value", "path": "token"}]
    assert env["MODAVERSE_AUTH_TOKENS_FILE"] == f"{mounts['auth']}/tokens"
    assert volumes["auth"]["secret"]["items"] == [{"key": "tokens", "path": "tokens"}]
    # and the service reads them as meant: the SDK's tls= gets the CA file
    ca, token = tmp_path / "ca.crt", tmp_path / "token"
    settings = settings_from(
        rendered, monkeypatch, {"MODAVERSE_TLS_CA_FILE": ca, "MODAVERSE_GATEWAY_TOKEN_FILE": token}
    )
    assert settings.gateway_tls_option == ca and settings.gateway_token_file == token
    assert settings.forward_token is False and settings.tls_cert_file is None


def test_tokens_to_the_gateway_need_tls_and_gateway_mtls_is_refused() -> None:
    assert "needs gateway.tls.enabled" in render_error(*ON, "web.gatewayToken.secretName=t")
    assert "client certificates" in render_error(*ON, *GATEWAY_TLS, "gateway.tls.mtls=true")
    assert "web.tls.secretName" in render_error(*ON, "web.tls.enabled=true")


def test_https_on_the_web_port_probes_and_proxies_https() -> None:
    rendered = render((), (*ON, "web.tls.enabled=true", "web.tls.secretName=web-tls", "web.ingress.enabled=true"))
    c = web_container(rendered)
    env = env_of(c)
    volumes, mounts = volumes_and_mounts(rendered)
    assert env["MODAVERSE_TLS_CERT_FILE"] == f"{mounts['tls']}/tls.crt"
    assert env["MODAVERSE_TLS_KEY_FILE"] == f"{mounts['tls']}/tls.key"
    assert volumes["tls"]["secret"]["secretName"] == "web-tls"
    assert "MODAVERSE_TLS_CLIENT_CA_FILE" not in env
    assert {c[p]["httpGet"]["scheme"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {"HTTPS"}
    ingress = rendered.get("Ingress", WEB)
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert rendered.get("Service", WEB)["spec"]["ports"][0]["appProtocol"] == "https"


def test_ingress_values_and_public_url() -> None:
    rendered = render(
        (),
        (
            *ON,
            "web.ingress.enabled=true",
            "web.ingress.host=chat.example.org",
            "web.ingress.tlsSecretName=chat-tls",
            "web.ingress.className=traefik",
            "web.ingress.annotations.example\\.org/team=ml",
        ),
    )
    ingress = rendered.get("Ingress", WEB)
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "traefik"
    assert spec["tls"] == [{"hosts": ["chat.example.org"], "secretName": "chat-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "chat.example.org"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": WEB, "port": {"name": "http"}}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["example.org/team"] == "ml"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"  # streamed answers
    assert env_of(web_container(rendered))["MODAVERSE_PUBLIC_URL"] == "https://chat.example.org"
    explicit = render((), (*ON, "web.ingress.enabled=true", "web.publicUrl=https://cdn.example.org/mv"))
    assert env_of(web_container(explicit))["MODAVERSE_PUBLIC_URL"] == "https://cdn.example.org/mv"
    assert "MODAVERSE_PUBLIC_URL" not in env_of(web_container(render((), ON)))


# NetworkPolicies --------------------------------------------------------------------------------------------


def test_web_policy_admits_http_and_reaches_only_the_gateway_its_replicas_and_dns() -> None:
    rendered = render(
        EXAMPLES["full-gpu"],
        (
            *ON,
            "networkPolicy.webFrom[0].namespaceSelector.matchLabels.role=edge",
            "networkPolicy.webEgress[0].ports[0].port=443",
        ),
    )
    pods = pod_labels(rendered)
    policy = rendered.get("NetworkPolicy", WEB)["spec"]
    assert [n for n, labels in pods.items() if labels_match(policy["podSelector"]["matchLabels"], labels)] == [WEB]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    http_rule, from_replicas, metrics_rule = policy["ingress"]
    assert http_rule == {
        "ports": [{"port": "http", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"role": "edge"}}}],
    }
    # the other web replicas, asking for a generated file (MODAVERSE_FILE_PEERS), whatever webFrom says
    (source,) = from_replicas["from"]
    assert [n for n, labels in pods.items() if labels_match(source["podSelector"]["matchLabels"], labels)] == [WEB]
    assert from_replicas["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    to_gateway, to_replicas, dns, extra = policy["egress"]
    (peer,) = to_gateway["to"]
    assert [n for n, labels in pods.items() if labels_match(peer["podSelector"]["matchLabels"], labels)] == [
        f"{FULLNAME}-gateway"
    ]
    assert to_gateway["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    (replica,) = to_replicas["to"]
    assert [n for n, labels in pods.items() if labels_match(replica["podSelector"]["matchLabels"], labels)] == [WEB]
    assert to_replicas["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "to" not in dns and {p["port"] for p in dns["ports"]} == {53}
    assert extra == {"ports": [{"port": 443}]}


def test_a_restricted_gateway_still_admits_the_web_pods() -> None:
    sets = ("networkPolicy.gatewayFrom[0].ipBlock.cidr=10.0.0.0/8",)
    rendered = render((), (*ON, *sets))
    pods = pod_labels(rendered)
    (grpc_rule, _) = rendered.get("NetworkPolicy", f"{FULLNAME}-gateway")["spec"]["ingress"]
    peers = grpc_rule["from"]
    assert {"ipBlock": {"cidr": "10.0.0.0/8"}} in peers
    selectors = [p["podSelector"]["matchLabels"] for p in peers if "podSelector" in p]
    assert {name for sel in selectors for name, labels in pods.items() if labels_match(sel, labels)} == {WEB}
    # web off: the gateway admits exactly gatewayFrom
    (grpc_rule, _) = render((), sets).get("NetworkPolicy", f"{FULLNAME}-gateway")["spec"]["ingress"]
    assert grpc_rule["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]


def test_service_monitor_scrapes_the_web_metrics() -> None:
    rendered = render(EXAMPLES["full-gpu"], ON)
    (monitor,) = rendered.of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    headless = rendered.get("Service", f"{WEB}-headless")
    assert labels_match(selector, headless["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] in [p["name"] for p in headless["spec"]["ports"]]
    assert not labels_match(selector, rendered.get("Service", WEB)["metadata"]["labels"])


# Replicas find each other's files ---------------------------------------------------------------------------


def test_replicas_ask_each_other_for_files_through_the_headless_service() -> None:
    rendered = render((), (*ON, "web.replicas=3", "web.port=8081"))
    env = env_of(web_container(rendered))
    assert env["MODAVERSE_FILE_PEERS"] == f"{WEB}-headless.{NAMESPACE}.svc.cluster.local:8081"
    headless = rendered.get("Service", f"{WEB}-headless")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is False
    ports = {p["name"]: p for p in headless["ports"]}
    assert ports["http"]["port"] == 8081 and ports["http"]["targetPort"] == "http"
    # the value the web service reads as it starts
    settings = WebSettings(file_peers=env["MODAVERSE_FILE_PEERS"])
    assert settings.peers == [(f"{WEB}-headless.{NAMESPACE}.svc.cluster.local", 8081)]
    # HTTPS on the web port: no plain-HTTP peers (the service would refuse the combination)
    tls = render((), (*ON, "web.tls.enabled=true", "web.tls.secretName=web-tls"))
    assert "MODAVERSE_FILE_PEERS" not in env_of(web_container(tls))
    # and a release can turn it off
    off = render((), (*ON, "web.env.MODAVERSE_FILE_PEERS="))
    assert env_of(web_container(off))["MODAVERSE_FILE_PEERS"] == ""


def test_cors_origins_reach_the_web_service_and_bad_ones_are_refused() -> None:
    rendered = render(
        (), (*ON, "web.corsOrigins[0]=https://app.example.org", "web.corsOrigins[1]=http://localhost:3000")
    )
    env = env_of(web_container(rendered))
    assert env["MODAVERSE_CORS_ORIGINS"] == "https://app.example.org,http://localhost:3000"
    assert WebSettings(cors_origins=env["MODAVERSE_CORS_ORIGINS"]).origins == [
        "https://app.example.org",
        "http://localhost:3000",
    ]
    assert "MODAVERSE_CORS_ORIGINS" not in env_of(web_container(render((), ON)))
    assert "corsOrigins" in render_error(*ON, "web.corsOrigins[0]=https://app.example.org/path")
