"""Who may call, and how often: bearer tokens and a per-client rate limit.

Tokens come from a file (a Kubernetes Secret mounted as a file), one ``client-name:token`` per
line. A call must carry ``authorization: Bearer <token>``; the token is compared in constant
time against every configured token (no early exit, so timing reveals neither which token nor
how much of it matched). Health checks and reflection stay open for probes and tooling.
Tokens are never logged; only the client's name is.

The rate limit is a token bucket per client (its name when authenticated, else its address):
over the limit, calls get RESOURCE_EXHAUSTED at once instead of queueing.
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FailedPrecondition, ResourceExhausted, Unauthenticated

OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def load_tokens(path: Path) -> dict[str, str]:
    """``client-name:token`` lines → {token: client name}. Blank lines and ``#`` comments are skipped."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep or not name.strip() or len(token.strip()) < 16:
            raise FailedPrecondition(f"{path}:{number}: expected 'client-name:token' with a token of 16+ characters")
        tokens[token.strip()] = name.strip()
    if not tokens:
        raise FailedPrecondition(f"{path}: no tokens")
    return tokens


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    rate: float  # calls per second, sustained
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < 1.0:
                return False
            bucket.tokens -= 1.0
            return True


class RequestGuard:
    def __init__(self, tokens: dict[str, str] | None = None, limiter: RateLimiter | None = None) -> None:
        self._tokens = [(t.encode(), name) for t, name in (tokens or {}).items()]
        self.limiter = limiter

    @property
    def active(self) -> bool:
        return bool(self._tokens) or self.limiter is not None

    def _client(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        offered = authorization[len("Bearer ") :].strip().encode()
        found = None
        for token, name in self._tokens:  # every comparison runs: constant time over the set
            if hmac.compare_digest(offered, token):
                found = name
        return found

    def check(self, method: str, metadata: dict[str, str], peer: str) -> str:
        """The caller's identity, or a domain error (UNAUTHENTICATED / RESOURCE_EXHAUSTED)."""
        if method.startswith(OPEN_PREFIXES):
            return peer
        client = peer
        if self._tokens:
            name = self._client(metadata.get("authorization"))
            if name is None:
                raise Unauthenticated("missing or invalid bearer token")
            client = name
        if self.limiter is not None and not self.limiter.allow(client):
            raise ResourceExhausted(
                f"rate limit of {self.limiter.rate:g} calls/s exceeded for this client; retry later"
            )
        return client
