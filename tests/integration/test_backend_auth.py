"""Bearer tokens on both hops, over TLS, with real servers: the gateway presents MODAVERSE_BACKEND_TOKEN_FILE to
backends that require MODAVERSE_AUTH_TOKENS_FILE, both files rotate without a restart, and the ``modaverse``
command reaches a TLS gateway that requires tokens with ``--ca``/``--token`` (or MODAVERSE_CA/MODAVERSE_TOKEN).

The LLM is the scripted test server (it answers a text-only chat without an encoder or generator); the encoder
and the generator route point at closed ports.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import modaverse
from modaverse.cli import main
from modaverse_gateway.settings import GatewaySettings
from modaverse_runtime.server import ModaverseServer
from tests.pki import write_pki

from .gateway_fixtures import start_gateway
from .in_process import BackgroundLoop, free_port
from .scripted_llm import start_scripted_llm

BACKEND_TOKEN = "gw-" + secrets.token_hex(16)
CLIENT_TOKEN = "cli-" + secrets.token_hex(16)
ASK = "Modality: [TEXT] Prompt: hello through two hops"


@dataclass
class Stack:
    loop: BackgroundLoop
    folder: Path
    ca: Path
    cert: Path
    key: Path
    llm: ModaverseServer

    def gateway(self, **settings: Any) -> ModaverseServer:
        """A gateway calling the LLM over TLS (verified with the test CA) and no other working backend."""
        closed = f"localhost:{free_port()}"
        return self.loop.run(
            start_gateway(closed, f"localhost:{self.llm.port}", {"image": closed}, tls_ca_file=self.ca, **settings)
        )

    def stop(self, server: ModaverseServer) -> None:
        self.loop.run(server.stop(grace=0))


def _swap(path: Path, text: str) -> None:
    """Replace ``path`` as a Kubernetes Secret volume does: a new file renamed over the old one."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    staged.replace(path)


def _llm_with_tokens(loop: BackgroundLoop, cert: Path, key: Path, tokens: Path) -> ModaverseServer:
    """The scripted LLM serving TLS and requiring a token from ``tokens``."""
    server, _ = loop.run(start_scripted_llm(tls_cert_file=cert, tls_key_file=key, auth_tokens_file=tokens))
    return server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("backend-auth")
    ca, cert, key = write_pki(folder)
    tokens = folder / "backend-tokens"
    tokens.write_text(f"gateway:{BACKEND_TOKEN}\n")
    loop = BackgroundLoop()
    llm = _llm_with_tokens(loop, cert, key, tokens)
    try:
        yield Stack(loop, folder, ca, cert, key, llm)
    finally:
        loop.run(llm.stop(grace=0))
        loop.close()


def _chat(port: int) -> str:
    with modaverse.Client(f"127.0.0.1:{port}", timeout=30) as client:
        return client.chat(ASK).text


def test_the_gateway_presents_its_backend_token(stack: Stack) -> None:
    token_file = stack.folder / "gateway-token"
    token_file.write_text(BACKEND_TOKEN + "\n")
    gateway = stack.gateway(backend_token_file=token_file)
    try:
        assert _chat(gateway.port) == "hello through two hops"
    finally:
        stack.stop(gateway)


def test_without_the_backend_token_the_chat_is_unavailable_naming_the_backend(stack: Stack) -> None:
    gateway = stack.gateway()
    try:
        with pytest.raises(modaverse.Unavailable, match="llm: missing or invalid bearer token"):
            _chat(gateway.port)
    finally:
        stack.stop(gateway)


def test_a_backend_token_is_never_sent_in_plain_text(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(BACKEND_TOKEN)
    with pytest.raises(ValidationError, match="backend_token_file needs tls_ca_file"):
        GatewaySettings(backend_token_file=token_file)


def test_both_token_files_rotate_without_a_restart(stack: Stack, tmp_path: Path) -> None:
    """The rotation the chart documents: the new token accepted, then sent, then the old one dropped."""
    old, new = "old-" + secrets.token_hex(16), "new-" + secrets.token_hex(16)
    accepted, sent = tmp_path / "tokens", tmp_path / "token"
    accepted.write_text(f"gateway:{old}\n")
    sent.write_text(old)
    llm = _llm_with_tokens(stack.loop, stack.cert, stack.key, accepted)
    closed = f"localhost:{free_port()}"
    gateway = stack.loop.run(
        start_gateway(closed, f"localhost:{llm.port}", {}, tls_ca_file=stack.ca, backend_token_file=sent)
    )
    try:
        assert _chat(gateway.port)
        for step in (
            lambda: _swap(accepted, f"gateway:{old}\ngateway-next:{new}\n"),
            lambda: _swap(sent, new),
            lambda: _swap(accepted, f"gateway-next:{new}\n"),
        ):
            step()
            time.sleep(1.1)  # each file is looked at once a second
            assert _chat(gateway.port)  # no step breaks a chat
        _swap(sent, "wrong-" + secrets.token_hex(16))
        time.sleep(1.1)
        with pytest.raises(modaverse.Unavailable, match="bearer token"):
            _chat(gateway.port)
    finally:
        stack.stop(gateway)
        stack.stop(llm)


# The modaverse command against a TLS gateway that requires tokens ----------------------------------------------


@pytest.fixture(scope="module")
def secured_gateway(stack: Stack) -> Iterator[str]:
    """``localhost:<port>`` of a gateway serving TLS, requiring CLIENT_TOKEN, and presenting BACKEND_TOKEN."""
    client_tokens, token_file = stack.folder / "client-tokens", stack.folder / "gateway-token-cli"
    client_tokens.write_text(f"cli:{CLIENT_TOKEN}\n")
    token_file.write_text(BACKEND_TOKEN)
    gateway = stack.gateway(
        tls_cert_file=stack.cert, tls_key_file=stack.key, auth_tokens_file=client_tokens, backend_token_file=token_file
    )
    try:
        yield f"localhost:{gateway.port}"  # the certificate's name
    finally:
        stack.stop(gateway)


def test_embed_needs_the_callers_token_like_every_rpc(stack: Stack, secured_gateway: str) -> None:
    anonymous = modaverse.Client(secured_gateway, tls=stack.ca, timeout=30, retry=None)
    with anonymous, pytest.raises(modaverse.Unauthenticated, match="missing or invalid bearer token"):
        anonymous.embed(["a red circle"])
    # With the token it gets through the gateway's checks: it fails at the closed encoder, not for a token.
    client = modaverse.Client(secured_gateway, tls=stack.ca, token=CLIENT_TOKEN, timeout=30, retry=None)
    with client, pytest.raises(modaverse.Unavailable, match=r"^UNAVAILABLE: encoder: ") as info:
        client.embed(["a red circle"])
    assert "token" not in info.value.details


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


@pytest.fixture
def no_connection_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("MODAVERSE_TLS", "MODAVERSE_CA", "MODAVERSE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_cli_chat_and_models_with_ca_and_token_flags(
    stack: Stack, secured_gateway: str, no_connection_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--target", secured_gateway, "--ca", str(stack.ca), "--token", CLIENT_TOKEN, "--timeout", "30"]
    code, out, err = _run(["chat", ASK, *flags, "--out", str(stack.folder / "out")], capsys)
    assert code == 0, err
    assert "answer: hello through two hops" in out
    code, out, err = _run(["models", *flags], capsys)
    assert code == 0, err
    assert "image" in out and "UNHEALTHY" in out  # the route is listed; its generator is not running
    # generate gets through the gateway's checks too: it fails at the closed generator, not for the token.
    code, out, err = _run(["generate", "image", "a red circle", *flags, "--out", str(stack.folder / "out")], capsys)
    assert code == 2 and "UNAVAILABLE" in err and "token" not in err


def test_cli_reads_the_connection_from_the_environment(
    stack: Stack, secured_gateway: str, no_connection_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_connection_env.setenv("MODAVERSE_CA", str(stack.ca))
    no_connection_env.setenv("MODAVERSE_TOKEN", CLIENT_TOKEN)
    code, out, err = _run(["models", "--target", secured_gateway], capsys)
    assert code == 0, err
    assert "image" in out
    code, _, err = _run(["models", "--target", secured_gateway, "--token", "x" * 24], capsys)  # a flag wins
    assert code == 2 and "UNAUTHENTICATED" in err


def test_cli_refuses_what_cannot_work(
    stack: Stack, secured_gateway: str, no_connection_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["models", "--target", secured_gateway, "--ca", str(stack.ca)], capsys)
    assert code == 2 and "error: UNAUTHENTICATED: missing or invalid bearer token" in err
    code, _, err = _run(["models", "--target", secured_gateway, "--token", CLIENT_TOKEN], capsys)
    assert code == 2 and "sent over TLS only" in err  # refused before anything is sent
    code, _, err = _run(["models", "--target", secured_gateway, "--ca", str(stack.folder / "absent.crt")], capsys)
    assert code == 2 and "absent.crt: no such file" in err
    no_connection_env.setenv("MODAVERSE_TLS", "maybe")
    code, _, err = _run(["models", "--target", secured_gateway], capsys)
    assert code == 2 and "MODAVERSE_TLS='maybe'" in err
    # --tls alone verifies with the system's CAs, which do not know the test CA: the handshake fails.
    no_connection_env.setenv("MODAVERSE_TLS", "1")
    code, _, err = _run(["models", "--target", secured_gateway, "--token", CLIENT_TOKEN, "--timeout", "5"], capsys)
    assert code == 2 and "UNAVAILABLE" in err
