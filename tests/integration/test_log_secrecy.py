"""Secrets stay out of the logs: bearer tokens and the bytes of users' media, at every log level.

The whole stack runs in this process (gateway with TLS and bearer tokens, real tiny encoder, scripted
LLM), so one handler on the root logger at DEBUG sees every line any service, the runtime, gRPC or a
library writes. The exchanges below are the ones most likely to put request data into a log line:
a rejected token, a media item that is accepted, rejected by validation, or rejected downstream, and
a downstream that is down. The same lines must still carry request ids and status codes; otherwise
an empty or switched-off log would pass the secrecy checks vacuously.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image, PngImagePlugin

from modaverse import AsyncClient
from modaverse.errors import InvalidArgument, ModaverseError, Unauthenticated
from modaverse.types import ChatResult
from modaverse_runtime import samples
from modaverse_runtime.logs import request_id
from modaverse_runtime.server import ModaverseServer
from tests.pki import write_pki

from .encoder_fixtures import start_encoder
from .gateway_fixtures import start_gateway
from .in_process import free_port
from .scripted_llm import start_scripted_llm

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Fresh per run, so a match can only come from this run's requests.
TOKEN = "mv-" + secrets.token_hex(16)
WRONG_TOKEN = TOKEN[:-6] + secrets.token_hex(3)  # a near miss: the kind of value a careless log would echo
MARKER = ("MVMEDIA" + secrets.token_hex(8)).encode()
MAX_MEDIA_BYTES = 2**15  # exact in max_media_mb, so the message states this very number
FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"  # configure_logging's text format


class _WithRequestId(logging.Filter):
    """What the product's handler adds to each record: the request id of the call that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class Capture(logging.Handler):
    """Every record at DEBUG and above, formatted as a log shipper would receive it (traceback included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(_WithRequestId())
        self.setFormatter(logging.Formatter(FORMAT))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@contextlib.contextmanager
def capture_everything(handler: logging.Handler) -> Iterator[None]:
    """Root at DEBUG with ``handler``; loggers that set their own level or do not propagate are opened too."""
    root = logging.getLogger()
    saved_root = root.level
    saved: list[tuple[logging.Logger, int]] = []
    isolated: list[logging.Logger] = []
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger):
            continue
        if logger.level > logging.DEBUG:
            saved.append((logger, logger.level))
            logger.setLevel(logging.DEBUG)
        if not logger.propagate:
            logger.addHandler(handler)
            isolated.append(logger)
    try:
        yield
    finally:
        for logger in isolated:
            logger.removeHandler(handler)
        for logger, level in saved:
            logger.setLevel(level)
        root.setLevel(saved_root)
        root.removeHandler(handler)


def marked_png(padding: int = 0) -> bytes:
    """A valid PNG with MARKER in a text chunk and after its end (decoders ignore both; the bytes keep them)."""
    image = Image.open(io.BytesIO(samples.make_image("star", "green", size=32)))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", MARKER.decode())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue() + MARKER * (1 + padding // len(MARKER))


def truncated_png() -> bytes:
    """Cut inside the image data: it passes the gateway's checks and the encoder's decoder rejects it."""
    png = marked_png()
    return png[: png.index(b"IDAT") + 20] + MARKER


def leaked_forms(data: bytes) -> set[str]:
    """How bytes could show up in a log line: as text, repr, hex, or base64 at any of the 3 alignments."""
    forms = {data.decode("latin-1"), repr(data)[2:-1], data.hex(), data.hex().upper()}
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.add(encode(b"\0" * shift + data).decode()[4:-4])  # the part that depends on ``data`` alone
    return forms


async def failure(call: Awaitable[object]) -> ModaverseError:
    try:
        await call
    except ModaverseError as exc:
        return exc
    raise AssertionError("the call was expected to fail")


@dataclass
class Exchanges:
    log: Capture = field(repr=False)
    debug_enabled: bool
    wrong_token: ModaverseError
    no_token: ModaverseError
    accepted: ChatResult
    too_many: ModaverseError
    too_big: ModaverseError
    undecodable: ModaverseError
    generator_down: ChatResult
    sent: list[bytes] = field(repr=False)  # keeps assertion messages readable


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def exchanges(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Exchanges]:
    """Runs every exchange once against one stack, with the capture on from before the first server starts."""
    folder = tmp_path_factory.mktemp("secrecy")
    ca, cert, key = write_pki(folder)
    tokens = folder / "tokens"
    tokens.write_text(f"alice:{TOKEN}\n")
    handler = Capture()
    with capture_everything(handler):
        encoder = await start_encoder(model_dir)
        servers: list[ModaverseServer] = []  # stopped in reverse order of start
        clients: list[AsyncClient] = []
        try:
            llm_server, _ = await start_scripted_llm()
            servers.append(llm_server)
            # The image route points at a port nobody listens on: the generator is down.
            gateway = await start_gateway(
                encoder.target,
                f"127.0.0.1:{llm_server.port}",
                {"image": f"127.0.0.1:{free_port()}"},
                tls_cert_file=cert,
                tls_key_file=key,
                auth_tokens_file=tokens,
                max_media_items=2,
                max_media_mb=MAX_MEDIA_BYTES / 2**20,
                retry_attempts=2,
                retry_backoff_ms=20,
            )
            servers.append(gateway)
            target = f"127.0.0.1:{gateway.port}"
            good, wrong, anonymous = (
                AsyncClient(target, tls=ca, token=TOKEN, timeout=60),
                AsyncClient(target, tls=ca, token=WRONG_TOKEN, timeout=60),
                AsyncClient(target, tls=ca, timeout=60),
            )
            clients += [good, wrong, anonymous]
            png, big, broken = marked_png(), marked_png(padding=MAX_MEDIA_BYTES), truncated_png()
            yield Exchanges(
                log=handler,
                debug_enabled=logging.getLogger("modaverse.rpc").isEnabledFor(logging.DEBUG),
                wrong_token=await failure(wrong.chat("what is this?", images=[png])),
                no_token=await failure(anonymous.chat("what is this?", images=[png])),
                accepted=await good.chat("what is this?", images=[png]),
                too_many=await failure(good.chat("and these?", images=[png, png, png])),
                too_big=await failure(good.chat("and this?", images=[big])),
                undecodable=await failure(good.chat("and this?", images=[broken])),
                generator_down=await good.chat("Modality: [IMAGE] Prompt: draw it again", images=[png]),
                sent=[png, big, broken],
            )
        finally:
            for client in clients:
                await client.close()
            for server in reversed(servers):
                await server.stop(1)
            await encoder.stop()


def lines_with(exchanges: Exchanges, *parts: str) -> list[str]:
    return [line for line in exchanges.log.lines if all(p in line for p in parts)]


async def test_every_exchange_got_its_documented_status(exchanges: Exchanges) -> None:
    for rejected in (exchanges.wrong_token, exchanges.no_token):
        assert isinstance(rejected, Unauthenticated)
        assert TOKEN not in rejected.details and WRONG_TOKEN not in rejected.details
    assert "blocks=2:(1, 256)" in exchanges.accepted.text  # the marked image was decoded and reached the LLM
    assert isinstance(exchanges.too_many, InvalidArgument)
    assert "3 media items; the limit is 2" in exchanges.too_many.details
    assert isinstance(exchanges.too_big, InvalidArgument)
    assert f"the limit is {MAX_MEDIA_BYTES}" in exchanges.too_big.details
    assert isinstance(exchanges.undecodable, InvalidArgument)
    assert exchanges.undecodable.details.startswith("encoder: media[0]")
    (error,) = exchanges.generator_down.errors
    assert (error.index, error.code) == (0, "UNAVAILABLE")


async def test_no_bearer_token_in_any_log_line(exchanges: Exchanges) -> None:
    for secret in (TOKEN, WRONG_TOKEN):
        leaks = [line for line in exchanges.log.lines if secret in line]
        assert leaks == [], f"a bearer token is logged: {leaks[:3]}"


async def test_no_media_bytes_in_any_log_line(exchanges: Exchanges) -> None:
    # The marker in every form, and the start of each whole item (a PNG header in hex or base64 is media
    # as much as the marker is).
    forms = leaked_forms(MARKER) | {form[:48] for data in exchanges.sent for form in leaked_forms(data)}
    for form in forms:
        leaks = [line for line in exchanges.log.lines if form in line]
        assert leaks == [], f"media bytes are logged ({form[:20]}...): {leaks[:3]}"


async def test_the_logs_name_requests_and_status_codes(exchanges: Exchanges) -> None:
    # Without these, the two tests above would pass on a silent log.
    assert exchanges.debug_enabled
    for failed, code in (
        (exchanges.wrong_token, "UNAUTHENTICATED"),
        (exchanges.no_token, "UNAUTHENTICATED"),
        (exchanges.too_many, "INVALID_ARGUMENT"),
        (exchanges.too_big, "INVALID_ARGUMENT"),
        (exchanges.undecodable, "INVALID_ARGUMENT"),
    ):
        assert failed.request_id, f"no request id came back with {failed}"
        assert lines_with(exchanges, f"[{failed.request_id}]", "GatewayService/Chat", code), failed
    # The id travels downstream: the encoder's own line about the bad item carries the gateway's id.
    rid = exchanges.undecodable.request_id
    assert lines_with(exchanges, f"[{rid}]", "EncoderService/Encode", "INVALID_ARGUMENT")
    # The dead generator is logged (replica unavailable) inside the chat's request, not as "-".
    retries = lines_with(exchanges, "generator image-tiny replica", "unavailable")
    assert retries
    assert all("[-]" not in line for line in retries)
