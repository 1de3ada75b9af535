"""Who may call, and how often: bearer tokens and a per-client rate limit.

Tokens come from a file (a Kubernetes Secret mounted as a file), one ``client-name:token`` per
line. A call must carry ``authorization: Bearer <token>``; the token is compared in constant
time against every configured token (no early exit, so timing reveals neither which token nor
how much of it matched). Health checks and reflection stay open for probes and tooling.
Tokens are never logged; only the client's name is. The file is read again when it changes
(looked at no more than once a second), so tokens rotate without a restart; a changed file that
cannot be used is logged and the previous tokens stay in force.

The rate limit is a token bucket per client: its name when authenticated, else its IP address
(without the port, which changes with every connection). Over the limit, calls get
RESOURCE_EXHAUSTED at once instead of queueing. The buckets are bounded: one idle long enough to
have refilled is dropped (a new one would be the same), and beyond ``max_clients`` the least
recently seen is dropped, so callers from ever new addresses cannot grow the map without end.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeAlias, TypeVar

from .errors import FailedPrecondition, ModaverseError, ResourceExhausted, Unauthenticated
from .files import file_stamp
from .settings import ServerSettings

OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
MIN_TOKEN_CHARS = 16

T = TypeVar("T")
log = logging.getLogger(__name__)


def load_tokens(path: Path) -> dict[str, str]:
    """``client-name:token`` lines → {token: client name}. Blank lines and ``#`` comments are skipped."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep or not name.strip() or len(token.strip()) < MIN_TOKEN_CHARS:
            raise FailedPrecondition(
                f"{path}:{number}: expected 'client-name:token' with a token of {MIN_TOKEN_CHARS}+ characters"
            )
        tokens[token.strip()] = name.strip()
    if not tokens:
        raise FailedPrecondition(f"{path}: no tokens")
    return tokens


def read_token(path: Path) -> str:
    """A file holding one bearer token (what a caller sends); surrounding whitespace is ignored."""
    token = path.read_text().strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise FailedPrecondition(f"{path}: expected one bearer token of {MIN_TOKEN_CHARS}+ characters")
    return token


class WatchedFile(Generic[T]):
    """A file's parsed contents, read again when the file changes (``files.file_stamp``: a Kubernetes Secret
    volume swaps a symlink), looked at no more than once per ``check_every_s``.

    A bad or missing file at construction raises; later, a changed file that fails to parse is logged
    (once per change, naming the file only) and the last good contents stay in use."""

    def __init__(self, path: Path, parse: Callable[[Path], T], check_every_s: float = 1.0) -> None:
        self.path = path
        self._parse = parse
        self._check_every_s = check_every_s
        self._lock = threading.Lock()
        self._stamp = file_stamp(path)
        self._value = parse(path)
        self._checked = time.monotonic()

    def get(self) -> T:
        now = time.monotonic()
        if now - self._checked >= self._check_every_s:
            with self._lock:
                if now - self._checked >= self._check_every_s:
                    self._checked = now
                    self._reload()
        return self._value

    def _reload(self) -> None:
        stamp = file_stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp  # a file that cannot be used is reported once, not every second
        try:
            value = self._parse(self.path)
        except (OSError, UnicodeDecodeError, ModaverseError) as exc:
            reason = exc.message if isinstance(exc, ModaverseError) else type(exc).__name__
            log.error("%s changed but cannot be used (%s); keeping its previous contents", self.path, reason)
            return
        self._value = value
        log.info("%s changed: read again", self.path)


def peer_address(peer: str) -> str:
    """The caller's address without its port, from a gRPC peer string: ``ipv4:10.0.0.7:51234`` → ``10.0.0.7``,
    ``ipv6:[fd00::7]:51234`` (or ``ipv6:%5Bfd00::7%5D:51234``) → ``fd00::7``. Anything else (``unix:…``, or a
    bare host as the web front door passes) is returned as it is."""
    kind, sep, rest = peer.partition(":")
    if not sep or kind not in ("ipv4", "ipv6"):
        return peer
    rest = urllib.parse.unquote(rest)
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if rest.startswith("["):
        return rest[1:].partition("]")[0]
    return rest


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    rate: float  # calls per second, sustained
    burst: int
    max_clients: int = 10_000
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)  # least recently seen first
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def idle_s(self) -> float:
        """After this long without a call a bucket is full: the same as a new one, so it is dropped."""
        return self.burst / self.rate if self.rate > 0 else float("inf")

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= self.max_clients:
                    self._buckets.popitem(last=False)
                bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            else:
                self._buckets.move_to_end(client)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < 1.0:
                return False
            bucket.tokens -= 1.0
            return True

    def _expire(self, now: float) -> None:
        # Ordered by last call, so the idle ones are at the front.
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.stamp < self.idle_s:
                return
            self._buckets.popitem(last=False)


TokenSource: TypeAlias = Mapping[str, str] | WatchedFile[dict[str, str]]


class RequestGuard:
    """``tokens``: {token: client name}, fixed or from a :class:`WatchedFile`; None: no tokens needed."""

    def __init__(self, tokens: TokenSource | None = None, limiter: RateLimiter | None = None) -> None:
        self._tokens = tokens
        self.limiter = limiter

    @property
    def active(self) -> bool:
        return bool(self._tokens) or self.limiter is not None

    def _current_tokens(self) -> Mapping[str, str]:
        tokens = self._tokens
        if isinstance(tokens, WatchedFile):
            return tokens.get()
        return tokens or {}

    def _client(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        offered = authorization[len("Bearer ") :].strip().encode()
        found = None
        for token, name in self._current_tokens().items():  # every comparison runs: constant time over the set
            if hmac.compare_digest(offered, token.encode()):
                found = name
        return found

    def check(self, method: str, metadata: dict[str, str], peer: str) -> str:
        """The caller's identity (client name, else address), or a domain error (UNAUTHENTICATED /
        RESOURCE_EXHAUSTED)."""
        if method.startswith(OPEN_PREFIXES):
            return peer
        client = peer_address(peer)
        bucket = f"address {client}"  # a client name cannot pass for an address, nor the reverse
        if self._tokens:
            name = self._client(metadata.get("authorization"))
            if name is None:
                raise Unauthenticated("missing or invalid bearer token")
            client, bucket = name, f"client {name}"
        if self.limiter is not None and not self.limiter.allow(bucket):
            raise ResourceExhausted(
                f"rate limit of {self.limiter.rate:g} calls/s exceeded for this client; retry later"
            )
        return client


def request_guard(settings: ServerSettings) -> RequestGuard:
    """The guard ``settings`` ask for: tokens from ``auth_tokens_file`` (followed as it changes), the rate limit."""
    tokens = WatchedFile(settings.auth_tokens_file, load_tokens) if settings.auth_tokens_file else None
    limiter = None
    if settings.rate_limit_rps > 0:
        limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst, settings.rate_limit_max_clients)
    return RequestGuard(tokens, limiter)
