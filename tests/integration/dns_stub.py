"""A DNS server on loopback for one name, whose A records a test changes while clients resolve it.

Enough of RFC 1035 for gRPC's c-ares resolver: a query for ``name`` (type A) gets one A record per address in
``addresses`` (TTL 0, so nothing caches them); any other type of that name (AAAA) gets an empty answer, and any
other name NXDOMAIN. A gRPC target ``dns://127.0.0.1:<port>/<name>:<grpc port>`` sends its queries here.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass, field
from typing import cast

TYPE_A, CLASS_IN = 1, 1
FLAG_RESPONSE, FLAG_RECURSION_DESIRED, FLAG_RECURSION_AVAILABLE = 0x8000, 0x0100, 0x0080
RCODE_NXDOMAIN = 3


def _qname(data: bytes, offset: int) -> tuple[str, int]:
    """The question's name (uncompressed, as resolvers send it) and the offset just after it."""
    labels = []
    while data[offset]:
        length = data[offset]
        labels.append(data[offset + 1 : offset + 1 + length].decode("ascii").lower())
        offset += 1 + length
    return ".".join(labels), offset + 1


@dataclass
class DnsStub(asyncio.DatagramProtocol):
    name: str
    addresses: list[str] = field(default_factory=list)
    queries: int = 0  # A queries answered
    _transport: asyncio.DatagramTransport | None = field(default=None, init=False, repr=False)

    @property
    def port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self._transport is not None
        query_id, flags, questions = struct.unpack(">HHH", data[:6])
        if questions != 1:
            return
        name, end = _qname(data, 12)
        qtype, _ = struct.unpack(">HH", data[end : end + 4])
        question = data[12 : end + 4]
        answers = []
        rcode = 0
        if name != self.name.lower():
            rcode = RCODE_NXDOMAIN
        elif qtype == TYPE_A:
            self.queries += 1
            # Each record points back at the question's name (compression pointer 0xc00c), TTL 0.
            answers = [
                b"\xc0\x0c" + struct.pack(">HHIH", TYPE_A, CLASS_IN, 0, 4) + socket.inet_aton(a) for a in self.addresses
            ]
        reply_flags = FLAG_RESPONSE | FLAG_RECURSION_AVAILABLE | (flags & FLAG_RECURSION_DESIRED) | rcode
        header = struct.pack(">HHHHHH", query_id, reply_flags, 1, len(answers), 0, 0)
        self._transport.sendto(header + question + b"".join(answers), addr)
