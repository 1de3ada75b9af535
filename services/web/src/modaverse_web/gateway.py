"""The gateway, through the SDK's ``AsyncClient`` only.

Tokens: with ``forward_token`` and TLS to the gateway, each caller's bearer token is sent on
(one ``AsyncClient`` per distinct token: few when the HTTP side checks them against its tokens file;
without that, at most ``MAX_CLIENTS`` are kept and the least recently used is closed once its calls
can have ended).
Otherwise the token in ``gateway_token_file`` is sent, if any. The SDK never sends a token over
plain text, so without TLS to the gateway no token is sent at all (logged once at start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from modaverse import AsyncClient, ModelRoute

from .settings import WebSettings

log = logging.getLogger(__name__)

MAX_CLIENTS = 64


class Gateway:
    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self._tls = settings.gateway_tls_option
        token_file = settings.gateway_token_file
        self._own_token = (token_file.read_text().strip() or None) if token_file is not None else None
        if not self._tls and (self._own_token or (settings.forward_token and settings.auth_tokens_file)):
            log.warning("no TLS to the gateway (MODAVERSE_GATEWAY_TLS / MODAVERSE_TLS_CA_FILE): no token is sent to it")
            self._own_token = None
        self._clients: OrderedDict[str | None, AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self._routes: list[ModelRoute] | None = None
        self._routes_at = 0.0
        self._routes_lock = asyncio.Lock()

    def client(self, caller_token: str | None = None) -> AsyncClient:
        token = self._own_token
        if caller_token and self._tls and self.settings.forward_token:
            token = caller_token
        client = self._clients.get(token)
        if client is not None:
            self._clients.move_to_end(token)
            return client
        client = AsyncClient(
            self.settings.gateway,
            tls=self._tls,
            token=token,
            timeout=self.settings.request_timeout_s,
            max_message_mb=self.settings.max_message_mb,
            # No SDK retries: a 429 or 503 goes back at once, and HTTP clients (the openai package among
            # them) retry those themselves; two layers of retries would multiply the wait.
            retry=None,
        )
        self._clients[token] = client
        if len(self._clients) > MAX_CLIENTS:
            _, oldest = self._clients.popitem(last=False)
            task = asyncio.get_running_loop().create_task(self._close_later(oldest))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return client

    async def _close_later(self, client: AsyncClient) -> None:
        try:
            await asyncio.sleep(self.settings.request_timeout_s)  # its calls have ended by then
        finally:
            await client.close()

    async def routes(self, caller_token: str | None = None) -> list[ModelRoute]:
        """The gateway's routing table, reused for ``models_cache_s``."""
        async with self._routes_lock:
            fresh = time.monotonic() - self._routes_at < self.settings.models_cache_s
            if self._routes is None or not fresh:
                self._routes = await self.client(caller_token).list_models()
                self._routes_at = time.monotonic()
            return self._routes

    async def close(self) -> None:
        closing = list(self._closing)
        for task in closing:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.close()
