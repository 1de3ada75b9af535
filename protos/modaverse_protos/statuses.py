"""The gRPC statuses the ModaVerse API gives a meaning of their own: one table for the client SDK and the servers.

Each side keeps its own exception classes (the SDK's carry the server's details and request id, the servers'
the status they are reported with), one per status here and named alike; ``error_classes`` resolves the table
against a side's errors module, so a status added here without its class fails at import, not in production.
Pure Python on grpcio alone: the SDK, which must not import the server runtime, uses it as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeVar

import grpc

E = TypeVar("E", bound=BaseException)

# Status -> the name of the exception class each side raises for it. Any other status has no class of its
# own (the SDK raises its base class with the code; a server reports INTERNAL for its own bugs).
ERROR_NAMES: Final[Mapping[grpc.StatusCode, str]] = MappingProxyType(
    {
        grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
        grpc.StatusCode.NOT_FOUND: "NotFound",
        grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
        grpc.StatusCode.UNAVAILABLE: "Unavailable",
        grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
        grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
    }
)

# Statuses about one hop's own credentials, not about the request: a proxy (the gateway) must not relay them
# from the service behind it as they are. A backend refusing the gateway's certificate does not mean that
# the client's token is wrong; to the client that backend is unavailable.
HOP_BY_HOP: Final[frozenset[grpc.StatusCode]] = frozenset({grpc.StatusCode.UNAUTHENTICATED})


def error_classes(module: object, base: type[E]) -> dict[grpc.StatusCode, type[E]]:
    """``ERROR_NAMES`` resolved in one side's errors ``module``: each status to the subclass of ``base``
    of that name there. Raises ``LookupError`` naming the class that is missing."""
    table: dict[grpc.StatusCode, type[E]] = {}
    for code, name in ERROR_NAMES.items():
        cls = getattr(module, name, None)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            where = getattr(module, "__name__", repr(module))
            raise LookupError(f"{where} has no {base.__name__} subclass {name} for {code.name}")
        table[code] = cls
    return table
