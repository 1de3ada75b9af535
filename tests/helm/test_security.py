"""The chart's security and scaling settings: connection age and reflection on every gRPC service, the
backend token Secret (accepted by the backends, sent by the gateway), the gateway's own callers' tokens, and the
LLM's run-time adapters."""

from __future__ import annotations

import pytest

from tests.helm.chart import (
    EXAMPLES,
    FULLNAME,
    Manifest,
    Rendered,
    env_of,
    main_container,
    render,
    render_error,
)

TLS_SETS = ("global.tls.enabled=true", "global.tls.secretName=internal-tls")
BACKEND_AUTH = (*TLS_SETS, "global.backendAuth.secretName=backend-auth")


def component(dep: Manifest) -> str:
    return str(dep["metadata"]["labels"]["app.kubernetes.io/component"])


def grpc_deployments(rendered: Rendered) -> list[Manifest]:
    """The Deployments of the gRPC servers (everything but the HTTP web front door)."""
    return [d for d in rendered.of_kind("Deployment") if component(d) != "web"]


def secret_mount(dep: Manifest, volume: str) -> tuple[str, dict[str, object]]:
    """Where ``volume`` is mounted in the main container, and its Secret source."""
    mounts = {m["name"]: m for m in main_container(dep)["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    mount = mounts[volume]
    assert mount.get("readOnly") is True and "subPath" not in mount  # whole volume: the kubelet updates the file
    return mount["mountPath"], volumes[volume]["secret"]


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_every_grpc_service_ages_its_connections(example: str) -> None:
    deployments = grpc_deployments(render(EXAMPLES[example]))
    assert len(deployments) >= 4
    for dep in deployments:
        env = env_of(main_container(dep))
        assert env["MODAVERSE_MAX_CONNECTION_AGE_S"] == "30", dep["metadata"]["name"]
        assert env["MODAVERSE_MAX_CONNECTION_AGE_GRACE_S"] == "0"  # calls in flight run to their end


def test_connection_age_follows_values_and_can_be_off() -> None:
    rendered = render((), ("global.maxConnectionAgeSeconds=0", "global.maxConnectionAgeGraceSeconds=600"))
    for dep in grpc_deployments(rendered):
        env = env_of(main_container(dep))
        assert env["MODAVERSE_MAX_CONNECTION_AGE_S"] == "0"
        assert env["MODAVERSE_MAX_CONNECTION_AGE_GRACE_S"] == "600"


def test_reflection_is_on_by_default_and_off_in_production_values() -> None:
    for example, expected in (
        ("default", "true"),
        ("tiny-cpu", "true"),
        ("full-gpu", "false"),
        ("swap-image", "false"),
    ):
        for dep in grpc_deployments(render(EXAMPLES[example])):
            assert env_of(main_container(dep))["MODAVERSE_REFLECTION"] == expected, (example, dep["metadata"]["name"])


def test_backend_token_secret_is_accepted_by_every_backend_and_sent_by_the_gateway() -> None:
    rendered = render(EXAMPLES["full-gpu"], BACKEND_AUTH)
    deployments = grpc_deployments(rendered)
    assert {component(d) for d in deployments} == {
        "encoder",
        "llm",
        "generator",
        "gateway",
    }
    for dep in deployments:
        env = env_of(main_container(dep))
        path, secret = secret_mount(dep, "backend-auth")
        assert path == "/etc/modaverse/backend-auth" and secret["secretName"] == "backend-auth"
        if component(dep) == "gateway":
            assert secret["items"] == [{"key": "token", "path": "token"}]
            assert env["MODAVERSE_BACKEND_TOKEN_FILE"] == "/etc/modaverse/backend-auth/token"
            assert env["MODAVERSE_TLS_CA_FILE"]  # the token goes over TLS
            assert "MODAVERSE_AUTH_TOKENS_FILE" not in env  # its own callers need none unless gateway.auth says so
        else:
            assert secret["items"] == [{"key": "tokens", "path": "tokens"}]
            assert env["MODAVERSE_AUTH_TOKENS_FILE"] == "/etc/modaverse/backend-auth/tokens"
            assert "MODAVERSE_BACKEND_TOKEN_FILE" not in env


def test_backend_token_keys_are_configurable() -> None:
    rendered = render((), (*BACKEND_AUTH, "global.backendAuth.tokensKey=accepted", "global.backendAuth.tokenKey=mine"))
    _, llm = secret_mount(rendered.get("Deployment", f"{FULLNAME}-llm"), "backend-auth")
    _, gateway = secret_mount(rendered.get("Deployment", f"{FULLNAME}-gateway"), "backend-auth")
    assert llm["items"] == [{"key": "accepted", "path": "tokens"}]
    assert gateway["items"] == [{"key": "mine", "path": "token"}]


def test_no_backend_tokens_unless_asked_and_never_without_tls() -> None:
    for dep in grpc_deployments(render(EXAMPLES["full-gpu"])):
        env = env_of(main_container(dep))
        assert "MODAVERSE_AUTH_TOKENS_FILE" not in env and "MODAVERSE_BACKEND_TOKEN_FILE" not in env
        assert "backend-auth" not in str(dep["spec"]["template"]["spec"]["volumes"])
    error = render_error("global.backendAuth.secretName=backend-auth")
    assert "global.backendAuth needs global.tls.enabled" in error


def test_gateway_callers_tokens() -> None:
    rendered = render((), ("gateway.auth.secretName=callers", "gateway.auth.key=lines"))
    gateway = rendered.get("Deployment", f"{FULLNAME}-gateway")
    path, secret = secret_mount(gateway, "auth")
    assert path == "/etc/modaverse/auth"
    assert secret == {"secretName": "callers", "defaultMode": 0o440, "items": [{"key": "lines", "path": "tokens"}]}
    assert env_of(main_container(gateway))["MODAVERSE_AUTH_TOKENS_FILE"] == "/etc/modaverse/auth/tokens"
    encoder = env_of(main_container(rendered.get("Deployment", f"{FULLNAME}-encoder")))
    assert "MODAVERSE_AUTH_TOKENS_FILE" not in encoder


def test_run_time_adapters_are_off_in_production_values_and_confined_when_on() -> None:
    def llm_env(files: tuple[str, ...], *sets: str) -> dict[str, str]:
        return env_of(main_container(render(files, sets).get("Deployment", f"{FULLNAME}-llm")))

    default = llm_env(())
    assert default["MODAVERSE_ALLOW_RUNTIME_ADAPTERS"] == "true" and "MODAVERSE_ADAPTER_ROOT" not in default
    production = llm_env(EXAMPLES["full-gpu"])
    assert production["MODAVERSE_ALLOW_RUNTIME_ADAPTERS"] == "false"
    on = llm_env(EXAMPLES["full-gpu"], "llm.runtimeAdapters.enabled=true")
    assert on["MODAVERSE_ALLOW_RUNTIME_ADAPTERS"] == "true" and on["MODAVERSE_ADAPTER_ROOT"] == "/models/adapters"
    assert "does not match pattern" in render_error("llm.runtimeAdapters.root=adapters")  # absolute paths only
