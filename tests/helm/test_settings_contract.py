"""The chart and the services agree: every MODAVERSE_* variable the chart renders is a field of that service's
settings class (they ignore unknown variables, so a typo would pass silently), and the rendered values parse."""

from __future__ import annotations

import os

import pytest

from modaverse_encoder.settings import EncoderSettings
from modaverse_gateway.settings import GatewaySettings
from modaverse_generators.settings import GeneratorSettings
from modaverse_llm.service import settings_class
from modaverse_llm.settings import LLMSettings
from modaverse_runtime.settings import ServerSettings, comma_list
from modaverse_web.settings import WebSettings
from tests.helm.chart import EXAMPLES, FULLNAME, Manifest, env_of, main_container, render

SETTINGS: dict[str, type[ServerSettings]] = {
    "encoder": EncoderSettings,
    "llm": LLMSettings,
    "generator": GeneratorSettings,
    "gateway": GatewaySettings,
    "web": WebSettings,
}

VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{name: (files, ()) for name, files in EXAMPLES.items()},
    "mtls": (
        EXAMPLES["full-gpu"],
        (
            "global.tls.enabled=true",
            "global.tls.secretName=internal",
            "global.tls.mtls=true",
            "gateway.tls.enabled=true",
            "gateway.tls.secretName=gw",
        ),
    ),
    # Bearer tokens on both hops (backend Secret over TLS, the gateway's own callers), connection age, no
    # reflection, LoadAdapter confined to a root.
    "tokens": (
        EXAMPLES["full-gpu"],
        (
            "global.tls.enabled=true",
            "global.tls.secretName=internal",
            "global.backendAuth.secretName=backend-auth",
            "gateway.auth.secretName=callers",
        ),
    ),
    # The gateway follows EndpointSlices through the API (MODAVERSE_DISCOVERY).
    "kubernetes-discovery": (EXAMPLES["tiny-cpu"], ("gateway.discovery=kubernetes",)),
    # The web front door with everything it can be given: TLS to the gateway, tokens, HTTPS, an Ingress.
    "web": (
        EXAMPLES["tiny-cpu"],
        (
            "web.enabled=true",
            "gateway.tls.enabled=true",
            "gateway.tls.secretName=gw",
            "web.gatewayToken.secretName=gw-token",
            "web.auth.secretName=web-tokens",
            "web.tls.enabled=true",
            "web.tls.secretName=web-tls",
            "web.ingress.enabled=true",
            "web.allowedMediaHosts={.example.com}",
        ),
    ),
}


def _settings(dep: Manifest, monkeypatch: pytest.MonkeyPatch) -> tuple[ServerSettings, dict[str, str]]:
    component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
    cls = SETTINGS[component]
    env = {k: v for k, v in env_of(main_container(dep)).items() if k.startswith("MODAVERSE_")}
    if cls is LLMSettings:  # a backend's own variables are fields of its settings class
        cls = settings_class(env.get("MODAVERSE_LLM_IMPL", LLMSettings.model_fields["llm_impl"].default))
    known = {f"MODAVERSE_{name.upper()}" for name in cls.model_fields}
    unknown = set(env) - known
    assert not unknown, f"{dep['metadata']['name']}: {cls.__name__} has no field for {sorted(unknown)}"
    with monkeypatch.context() as patch:
        for key in os.environ:
            if key.startswith("MODAVERSE_"):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return cls(), env


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_env_parses_in_the_service_settings(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    files, sets = VARIANTS[variant]
    for dep in render(files, sets).of_kind("Deployment"):
        settings, env = _settings(dep, monkeypatch)
        assert settings.port == int(env["MODAVERSE_PORT"])
        assert settings.metrics_port == int(env["MODAVERSE_METRICS_PORT"]) > 0
        assert settings.grace_period_s == float(env["MODAVERSE_GRACE_PERIOD_S"])
        assert (settings.tls_cert_file is not None) == ("MODAVERSE_TLS_CERT_FILE" in env)


def test_release_settings_reach_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render(EXAMPLES["swap-image"])
    llm, _ = _settings(rendered.get("Deployment", f"{FULLNAME}-llm"), monkeypatch)
    assert isinstance(llm, LLMSettings)
    # release.root: the converter's adapter, under the name the service uses by default
    assert llm.llm_impl == "vllm" and llm.default_adapter == "default" and set(llm.adapters) == {"default"}
    sdxl, _ = _settings(rendered.get("Deployment", f"{FULLNAME}-gen-sdxl"), monkeypatch)
    assert isinstance(sdxl, GeneratorSettings)
    assert sdxl.generator_kind == "text-to-image" and sdxl.default_width == 1024 and sdxl.cpu_offload is False
    assert sdxl.generator_model == "/models/stabilityai/stable-diffusion-xl-base-1.0"
    gateway, _ = _settings(rendered.get("Deployment", f"{FULLNAME}-gateway"), monkeypatch)
    assert isinstance(gateway, GatewaySettings)
    assert comma_list(gateway.encoder_targets) == [f"dns:///{FULLNAME}-encoder.ml.svc.cluster.local:50051"]


def test_security_and_scaling_settings_reach_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    files, sets = VARIANTS["tokens"]
    rendered = render(files, sets)
    for dep in rendered.of_kind("Deployment"):
        settings, _ = _settings(dep, monkeypatch)
        assert settings.max_connection_age_s == 30.0 and settings.max_connection_age_grace_s == 0.0
        assert settings.reflection is False
    gateway, _ = _settings(rendered.get("Deployment", f"{FULLNAME}-gateway"), monkeypatch)
    assert isinstance(gateway, GatewaySettings)
    assert str(gateway.backend_token_file) == "/etc/modaverse/backend-auth/token"
    assert str(gateway.auth_tokens_file) == "/etc/modaverse/auth/tokens"
    llm, _ = _settings(rendered.get("Deployment", f"{FULLNAME}-llm"), monkeypatch)
    assert isinstance(llm, LLMSettings)
    assert str(llm.auth_tokens_file) == "/etc/modaverse/backend-auth/tokens"
    assert str(llm.adapter_root) == "/models/adapters" and not llm.allow_runtime_adapters  # off in production
