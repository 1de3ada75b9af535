"""Web front door settings (``MODAVERSE_*``), on top of what every server shares.

Shared fields keep their meaning over HTTP: ``tls_cert_file``/``tls_key_file`` serve HTTPS,
``tls_client_ca_file`` requires client certificates, ``auth_tokens_file`` requires
``Authorization: Bearer`` on the API, ``rate_limit_*`` limits each client, ``max_concurrent_rpcs``
caps the API calls in flight (429 beyond it), ``grace_period_s``/``drain_delay_s`` shape the SIGTERM
drain, and ``tls_ca_file`` verifies the gateway (it turns TLS to the gateway on).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from modaverse_runtime.settings import ServerSettings, comma_list


def parse_peers(spec: str) -> list[tuple[str, int]]:
    """``host:port[,host:port…]`` (IPv6 hosts in brackets); ValueError naming a bad entry."""
    peers = []
    for entry in comma_list(spec):
        host, sep, port = entry.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"file peer {entry!r} is not host:port")
        peers.append((host, int(port)))
    return peers


class WebSettings(ServerSettings):
    port: int = Field(8080, ge=0, le=65535)
    gateway: str = Field("localhost:50050", description="the gateway's host:port (gRPC)")
    gateway_tls: bool = Field(False, description="TLS to the gateway, verified by the system CAs (or tls_ca_file)")
    gateway_token_file: Path | None = Field(
        None, description="file holding the bearer token sent to the gateway when no caller token is forwarded"
    )
    forward_token: bool = Field(
        True, description="send each caller's bearer token on to the gateway (needs TLS to the gateway)"
    )
    request_timeout_s: float = Field(600.0, gt=0, description="deadline of one gateway call made for a request")
    max_concurrent_rpcs: int = Field(
        64,
        ge=1,
        description="API calls in flight (429 beyond); at most the gateway's MODAVERSE_MAX_CONCURRENT_CHATS, so "
        "excess calls are refused here at once rather than after their bodies are read (docs/reliability.md)",
    )

    max_body_mb: float = Field(48.0, gt=0, description="largest HTTP request body (413 beyond)")
    max_media_mb: float = Field(32.0, gt=0, description="largest decoded media item in a request (413 beyond)")
    max_media_items: int = Field(16, ge=1, description="media parts in one request, all messages together")
    max_parts: int = Field(64, ge=1, description="content parts in one request, all messages together")
    max_messages: int = Field(64, ge=1, description="messages in one chat request")
    allowed_media_hosts: str = Field(
        "",
        description="comma-separated hosts whose http(s) media URLs are fetched ('.example.com': any subdomain); "
        "empty: remote URLs are refused",
    )
    remote_media_timeout_s: float = Field(10.0, gt=0, description="time to fetch one remote media URL")
    cors_origins: str = Field(
        "",
        description="comma-separated origins (scheme://host[:port]) whose pages may call the API from a browser, "
        "or '*' for any; empty: none (no CORS headers)",
    )

    files_ttl_s: float = Field(3600.0, gt=0, description="how long generated media stay at /v1/files/{id}")
    files_max_mb: float = Field(256.0, gt=0, description="generated media kept, all files together (oldest go first)")
    file_peers: str = Field(
        "",
        description="host:port list of this service's other replicas (a headless Service name resolves to all) "
        "to ask for a /v1/files link this replica does not hold; empty: none",
    )
    file_peers_timeout_s: float = Field(2.0, gt=0, description="time to wait for the peers' answers")
    public_url: str = Field("", description="base URL for links to /v1/files (empty: the request's own URL)")

    chat_model: str = Field("modaverse", min_length=1, description="model id of chat completions")
    models_cache_s: float = Field(5.0, ge=0, description="reuse the gateway's routing table this long")
    playground: bool = Field(True, description="serve the browser playground at /")

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("file_peers")
    @classmethod
    def _peers_parse(cls, value: str) -> str:
        parse_peers(value)
        return value

    @model_validator(mode="after")
    def _peers_in_plain_http(self) -> WebSettings:
        if self.file_peers and self.tls_cert_file is not None:
            raise ValueError(
                "MODAVERSE_FILE_PEERS asks the other replicas over plain HTTP, but this one serves HTTPS "
                "(MODAVERSE_TLS_CERT_FILE): terminate TLS in front of the replicas, or leave the peers empty"
            )
        return self

    @property
    def peers(self) -> list[tuple[str, int]]:
        return parse_peers(self.file_peers)

    @field_validator("cors_origins")
    @classmethod
    def _origins_parse(cls, value: str) -> str:
        for origin in comma_list(value):
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"CORS origin {origin!r} is not scheme://host[:port] (no path, no trailing slash)")
        return value

    @property
    def origins(self) -> list[str]:
        return comma_list(self.cors_origins)

    @property
    def media_hosts(self) -> list[str]:
        return [host.lower() for host in comma_list(self.allowed_media_hosts)]

    @property
    def gateway_tls_option(self) -> bool | Path:
        """What the SDK's ``tls=`` takes: False, True (system CAs) or the CA file."""
        if self.tls_ca_file is not None:
            return self.tls_ca_file
        return self.gateway_tls
