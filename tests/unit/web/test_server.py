"""The listening socket: connections it accepts must not wait on Nagle's algorithm."""

from __future__ import annotations

import asyncio
import socket

from modaverse_web.server import bind


async def _accepted_nodelay() -> int:
    found: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        found.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    listener = bind("127.0.0.1", 0)
    server = await asyncio.start_server(handle, sock=listener)
    port = listener.getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(found, 10)
        writer.close()
        return value
    finally:
        server.close()
        await server.wait_closed()


def test_accepted_connections_have_tcp_nodelay() -> None:
    """Without it, each kept-alive HTTP response waited ~40 ms for the client's delayed ACK
    (bench/web.py: +43 ms per request)."""
    assert asyncio.run(_accepted_nodelay()) != 0
