"""Bearer tokens checked on HTTP and forwarded to the gateway, HTTPS, and the per-client rate limit.

The gateway here requires TLS and a bearer token; the web front door holds no token of its own, so a
call only gets through when the caller's token is forwarded."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from modaverse_runtime.server import ModaverseServer
from tests.integration import gateway_fixtures
from tests.pki import write_pki

from .stack import RunningWeb, Stack

TOKEN = "web-" + secrets.token_hex(16)
ASK = {"model": "modaverse", "messages": [{"role": "user", "content": "Modality: [TEXT] Prompt: let me in"}]}


@dataclass
class Secured:
    gateway: ModaverseServer
    ca: Path
    tokens: Path
    checked: RunningWeb  # checks tokens on HTTP (and serves HTTPS), forwards them
    open: RunningWeb  # checks nothing itself, forwards what it gets


@pytest.fixture(scope="module")
def secured(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("web-pki")
    ca, cert, key = write_pki(folder)
    tokens = folder / "tokens"
    tokens.write_text(f"alice:{TOKEN}\n")
    gateway = stack.loop.run(
        gateway_fixtures.start_gateway(
            stack.encoder.target,
            f"127.0.0.1:{stack.llm_server.port}",
            {},
            tls_cert_file=cert,
            tls_key_file=key,
            auth_tokens_file=tokens,
        )
    )
    target = f"localhost:{gateway.port}"  # the certificate's name
    checked = stack.start_web(
        gateway=target, tls_ca_file=ca, auth_tokens_file=tokens, tls_cert_file=cert, tls_key_file=key
    )
    open_web = stack.start_web(gateway=target, tls_ca_file=ca)
    try:
        yield Secured(gateway, ca, tokens, checked, open_web)
    finally:
        stack.loop.run(gateway.stop(0))


def test_tokens_are_checked_on_http_and_forwarded(secured: Secured) -> None:
    url = secured.checked.url
    assert url.startswith("https://")
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=secured.ca), timeout=60) as http:
        for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": TOKEN}):
            reply = http.post("/v1/chat/completions", json=ASK, headers=headers)
            assert reply.status_code == 401
            assert reply.json()["error"]["type"] == "authentication_error"
            assert reply.headers["www-authenticate"] == "Bearer"
        # probes, the page and file links stay open
        assert http.get("/healthz").status_code == 200
        assert http.get("/").status_code == 200
        assert http.get("/v1/files/file-unknown").status_code == 404
    trusted = ssl.create_default_context(cafile=secured.ca)
    # (closed at the end: an idle TLS connection left open would hold the server's shutdown)
    with openai.OpenAI(
        base_url=f"{url}/v1", api_key=TOKEN, http_client=openai.DefaultHttpxClient(verify=trusted), max_retries=0
    ) as client:
        answer = client.chat.completions.create(model="modaverse", messages=ASK["messages"])  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "let me in"  # the gateway accepted the forwarded token
    with (
        openai.OpenAI(
            base_url=f"{url}/v1", api_key="nope", http_client=openai.DefaultHttpxClient(verify=trusted), max_retries=0
        ) as stranger,
        pytest.raises(openai.AuthenticationError),
    ):
        stranger.models.list()


def test_without_http_auth_the_gateway_still_decides(secured: Secured) -> None:
    with httpx.Client(base_url=secured.open.url, timeout=60) as http:
        refused = http.post("/v1/chat/completions", json=ASK)  # nothing to forward: the gateway refuses
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        allowed = http.post("/v1/chat/completions", json=ASK, headers={"authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200
        assert allowed.json()["choices"][0]["message"]["content"] == "let me in"


def test_rate_limit_is_429_per_client(stack: Stack) -> None:
    limited = stack.start_web(rate_limit_rps=0.001, rate_limit_burst=2)
    with httpx.Client(base_url=limited.url, timeout=60) as http:
        assert [http.get("/v1/models").status_code for _ in range(2)] == [200, 200]
        refused = http.get("/v1/models")
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.headers["retry-after"] == "1"
        assert http.get("/healthz").status_code == 200  # probes are not limited


def test_concurrency_cap_is_429(stack: Stack) -> None:
    capped = stack.start_web(max_concurrent_rpcs=1)
    slow = {
        "model": "modaverse",
        "messages": [{"role": "user", "content": "SLOW Modality: [TEXT] Prompt: a b c d"}],
        "stream": True,
    }
    with (
        httpx.Client(base_url=capped.url, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=slow) as first,
    ):
        lines = first.iter_lines()
        assert next(lines).startswith("data: ")  # the first call holds the only slot now
        refused = http.get("/v1/models")
        assert refused.status_code == 429
        assert "at most 1 API calls at once" in refused.json()["error"]["message"]
        assert [line for line in lines if line.startswith("data: ")][-1] == "data: [DONE]"
    assert httpx.get(f"{capped.url}/v1/models").status_code == 200  # the slot was given back
