"""The FastAPI application: the OpenAI-compatible API, files, probes, metrics and the playground."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modaverse import ChatEvent, Done, MetaResponse
from modaverse.errors import ModaverseError
from modaverse_runtime import errors as runtime_errors
from modaverse_runtime.security import RequestGuard, request_guard

from . import metrics
from .errors import APIError, from_sdk, too_large
from .files import FileStore, StoredFile
from .gateway import Gateway
from .media import MediaFetcher
from .peers import PEER_HEADER, FilePeers
from .requests import MODALITIES, ChatParser, check_body, parse_generation
from .responses import DONE_LINE, ChatChunks, Generation, MediaKeeper, completion, error_event, new_id, sse
from .settings import WebSettings
from .streaming import ClientGone, EventStream, until_disconnect

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
GENERATION_PATHS = {
    "image": "/v1/images/generations",
    "video": "/v1/videos/generations",
    "audio": "/v1/audio/generations",
}
_FIXED_ROUTES = {p: p for p in ("/v1/chat/completions", "/v1/models", *GENERATION_PATHS.values())}
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


@dataclass
class WebState:
    settings: WebSettings
    gateway: Gateway
    store: FileStore
    guard: RequestGuard
    draining: bool = False
    in_flight: int = 0
    started: float = field(default_factory=time.time)


class _Front:
    """Outermost ASGI layer: body size limit (413), concurrency cap (429), request metrics."""

    def __init__(self, app: ASGIApp, state: WebState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        api = path.startswith("/v1/") and not path.startswith("/v1/files/")
        s = self.state.settings
        limit = int(s.max_body_mb * 2**20)
        status = [500]
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        received = [0]

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    raise too_large(f"the request body is over the limit of {s.max_body_mb:g} MB")
            return message

        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        refused: APIError | None = None
        if length.isdigit() and int(length) > limit:
            refused = too_large(f"the request body is {int(length)} bytes, over the limit of {s.max_body_mb:g} MB")
        elif api and self.state.in_flight >= s.max_concurrent_rpcs:
            refused = APIError(
                429,
                f"this server answers at most {s.max_concurrent_rpcs} API calls at once; retry later",
                type="rate_limit_error",
                code="too_many_requests",
            )
        if api:
            self.state.in_flight += 1
            metrics.IN_FLIGHT.inc()
        try:
            if refused is not None:
                await _send_error(refused, sending, drain=receive if refused.status == 413 else None)
            else:
                await self.app(scope, receiving, sending)
        finally:
            if api:
                self.state.in_flight -= 1
                metrics.IN_FLIGHT.dec()
            route = scope.get("route")  # set by the router; a refused call never got there
            label = (
                getattr(route, "path", None)
                or _FIXED_ROUTES.get(path)
                or ("/static" if path.startswith("/static/") else "unmatched")
            )
            metrics.REQUESTS.labels(label, str(status[0])).inc()
            metrics.LATENCY.labels(label).observe(time.perf_counter() - started)


async def _send_error(error: APIError, send: Send, drain: Receive | None = None) -> None:
    if drain is not None:  # read what the client still sends (bounded), so it sees the answer, not a reset
        budget = 64 * 2**20
        while budget > 0:
            message = await drain()
            budget -= len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return (header[len("Bearer ") :].strip() or None) if header.startswith("Bearer ") else None


async def authorize(request: Request) -> str | None:
    """The caller's bearer token (to forward), after the token and rate-limit checks.

    ``async`` though it never waits: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hop on every call (~0.3 ms on a busy loop).
    """
    state: WebState = request.app.state.web
    peer = request.client.host if request.client else "unknown"
    header = request.headers.get("authorization")
    try:
        state.guard.check(request.url.path, {"authorization": header} if header else {}, peer)
    except runtime_errors.Unauthenticated:
        raise APIError(
            401,
            "missing or invalid bearer token (send 'Authorization: Bearer <token>')",
            type="authentication_error",
            code="invalid_api_key",
        ) from None
    except runtime_errors.ResourceExhausted as exc:
        raise APIError(429, exc.message, type="rate_limit_error", code="rate_limit_exceeded") from None
    return _bearer(request)


Caller = Annotated[str | None, Depends(authorize)]


async def _read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        return check_body(json.loads(raw))
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None


async def _first(events: AsyncGenerator[ChatEvent, None]) -> ChatEvent:
    """The first event, so that a call failing at once gets its own HTTP status (not a 200 stream)."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise APIError(502, "the gateway ended the call without an answer", type="server_error") from None


def create_app(settings: WebSettings, gateway: Gateway | None = None) -> FastAPI:
    """The application; ``gateway`` may be given (tests), else one is made from ``settings``."""
    store = FileStore(int(settings.files_max_mb * 2**20), settings.files_ttl_s)
    state = WebState(settings, gateway or Gateway(settings), store, request_guard(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.READY.set(1)
        yield
        metrics.READY.set(0)
        await state.gateway.close()

    app = FastAPI(title="ModaVerse", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.web = state
    app.add_middleware(_Front, state=state)
    if settings.origins:
        # Outermost (added last): a preflight is answered before the body limit and the concurrency cap, and
        # every answer, errors included, carries the headers a page needs to read it. Bearer tokens, not
        # cookies, so no credentials mode.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],  # authorization, content-type, and what OpenAI's JavaScript client adds
            max_age=600,
        )
    peers = FilePeers(settings.peers, settings.file_peers_timeout_s)

    async def find_file(file_id: str, from_peer: bool = False) -> StoredFile | None:
        """A file this replica holds, else one a peer holds (kept here from then on); a peer's own
        question is answered from this store alone."""
        stored = store.get(file_id)
        if stored is None and not from_peer:
            stored = await peers.find(file_id)
            if stored is not None:
                store.adopt(stored)
        return stored

    async def media_file(file_id: str) -> tuple[str, bytes] | None:
        stored = await find_file(file_id)
        return (stored.mime_type, stored.data) if stored is not None else None

    fetcher = MediaFetcher(
        settings.media_hosts, settings.remote_media_timeout_s, int(settings.max_media_mb * 2**20), media_file
    )
    timeout = settings.request_timeout_s

    def base_url(request: Request) -> str:
        return settings.public_url or str(request.base_url).rstrip("/")

    # ------------------------------------------------------------------ errors

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status, headers=exc.headers())

    @app.exception_handler(ModaverseError)
    async def _sdk_error(request: Request, exc: ModaverseError) -> JSONResponse:
        return await _api_error(request, from_sdk(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return await _api_error(request, APIError(500, "internal error", type="server_error", code="internal_error"))

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it; recorded in the metrics as 499

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"no such endpoint: {request.method} {request.url.path}" if exc.status_code == 404 else exc.detail
        return await _api_error(request, APIError(exc.status_code, str(message), type=kind, code=None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _api_error(request, APIError(400, str(exc), code="invalid_value"))

    # ------------------------------------------------------------------ probes, metrics, page

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        if state.draining:
            return JSONResponse({"status": "draining"}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if settings.playground:
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def page() -> FileResponse:
            return FileResponse(STATIC / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    # ------------------------------------------------------------------ models

    def _models(routes: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {
                "id": settings.chat_model,
                "object": "model",
                "created": int(state.started),
                "owned_by": "modaverse",
                "modaverse": {"kind": "chat", "endpoint": "/v1/chat/completions"},
            }
        ]
        for r in routes:
            out.append(
                {
                    "id": f"{r.modality}:{r.model}",
                    "object": "model",
                    "created": int(state.started),
                    "owned_by": "modaverse",
                    "modaverse": {
                        "kind": "generator",
                        "modality": r.modality,
                        "route": r.model,
                        "default": r.is_default,
                        "healthy": r.healthy,
                        "endpoint": GENERATION_PATHS.get(r.modality),
                    },
                }
            )
        return out

    @app.get("/v1/models")
    async def list_models(caller: Caller) -> dict[str, Any]:
        return {"object": "list", "data": _models(await state.gateway.routes(caller))}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str, caller: Caller) -> dict[str, Any]:
        for entry in _models(await state.gateway.routes(caller)):
            if entry["id"] == model:
                return entry
        raise APIError(404, f"The model '{model}' does not exist", type="not_found_error", code="model_not_found")

    # ------------------------------------------------------------------ chat

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, caller: Caller) -> Response:
        route = "/v1/chat/completions"
        call = await ChatParser(settings, fetcher).parse(await _read_json(request))
        client = state.gateway.client(caller)
        keeper = MediaKeeper(store, base_url(request), call.inline_media)
        completion_id = new_id("chatcmpl")
        if not call.stream:
            result = await until_disconnect(
                request.receive, client.chat(call.text, timeout=timeout, **call.sdk_kwargs()), route
            )
            return JSONResponse(completion(completion_id, call.model, result, keeper))
        events = client.stream(call.text, timeout=timeout, **call.sdk_kwargs())
        first = await _first(events)
        chunks = ChatChunks(completion_id, call.model, keeper, call.include_usage)
        return EventStream(_sse(events, first, chunks.on, [chunks.first()]), route)

    # ------------------------------------------------------------------ direct generation

    def _generation_endpoint(modality: str) -> Callable[..., Any]:
        path = GENERATION_PATHS[modality]

        async def generate(request: Request, caller: Caller) -> Response:
            body = await _read_json(request)
            model = body.get("model")
            needs_routes = isinstance(model, str) and model not in ("", "default", modality, f"{modality}:default")
            routes = {r.model: r.modality for r in await state.gateway.routes(caller)} if needs_routes else {}
            call = parse_generation(body, modality, routes)
            client = state.gateway.client(caller)
            keeper = MediaKeeper(store, base_url(request))
            generation = Generation(f"{modality}:default", keeper, b64=call.response_format == "b64_json")
            events = client.generate_stream(modality, call.prompt, options=call.options, timeout=timeout)
            if not call.stream:

                async def fold() -> dict[str, Any]:
                    async for event in events:
                        generation.on(event)
                    if generation.result is None:
                        raise APIError(502, "the gateway ended the generation without a file", type="server_error")
                    return generation.result

                return JSONResponse(await until_disconnect(request.receive, fold(), path))
            first = await _first(events)
            return EventStream(_sse(events, first, generation.on, []), path)

        generate.__name__ = f"generate_{modality}"
        return generate

    for modality in MODALITIES:
        app.post(GENERATION_PATHS[modality])(_generation_endpoint(modality))

    # ------------------------------------------------------------------ files

    @app.get("/v1/files/{file_id}")
    @app.get("/v1/files/{file_id}/content", include_in_schema=False)
    async def get_file(file_id: str, request: Request) -> Response:
        stored = await find_file(file_id, from_peer=PEER_HEADER in request.headers)
        if stored is None:
            message = f"no file {file_id!r} (files are kept for a limited time)"
            raise APIError(404, message, type="not_found_error", code="not_found")
        size = len(stored.data)
        headers = {
            "accept-ranges": "bytes",
            "cache-control": f"private, max-age={max(0, int(stored.expires_at - time.time()))}",
            "content-disposition": f'inline; filename="{stored.filename}"',
            "x-content-type-options": "nosniff",
        }
        span = _range(request.headers.get("range"), size)
        if span is None:
            return Response(stored.data, media_type=stored.mime_type, headers=headers)
        start, end = span
        if start >= size or start > end:
            return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
        headers["content-range"] = f"bytes {start}-{end}/{size}"
        return Response(stored.data[start : end + 1], 206, media_type=stored.mime_type, headers=headers)

    return app


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range; None for none or a form we ignore."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[len("bytes=") :].strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()):
        return None
    if not first:
        return max(0, size - int(last)), size - 1
    return int(first), min(int(last), size - 1) if last.isdigit() else size - 1


async def _sse(
    events: AsyncGenerator[ChatEvent, None],
    first: ChatEvent,
    translate: Callable[[ChatEvent], list[dict[str, Any]]],
    opening: list[dict[str, Any]],
) -> AsyncGenerator[bytes, None]:
    """SSE lines for every event, then ``[DONE]``; a failure mid-stream becomes an error event.

    One write per gateway event, fewer where nothing can come between: the opening goes with the
    first event, and ``Done`` (always the last) with ``[DONE]``, as does a meta-response that starts
    no generation (``Done`` follows at once). Each write is a TCP segment the client wakes up for.
    """
    tail = b""
    try:
        head = b"".join(sse(payload) for payload in opening)
        event: ChatEvent | None = first
        while event is not None:
            lines = head + b"".join(sse(payload) for payload in translate(event))
            head = b""
            if isinstance(event, Done) or (isinstance(event, MetaResponse) and not event.invocations):
                tail += lines
            elif lines:
                yield lines
            event = await anext(events, None)
    except ModaverseError as exc:
        tail += error_event(from_sdk(exc))
    except APIError as exc:
        tail += error_event(exc)
    finally:
        await events.aclose()
    yield tail + DONE_LINE
