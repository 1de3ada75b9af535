"""Gateway settings (``MODAVERSE_*``). Routes come from a YAML/JSON file or string (Helm renders it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from modaverse_runtime.settings import ServerSettings


class GatewaySettings(ServerSettings):
    port: int = Field(50050, ge=0, le=65535)
    encoder_targets: str = Field("localhost:50051", description="comma-separated encoder endpoints")
    llm_targets: str = Field("localhost:50052", description="comma-separated LLM endpoints")
    routes_file: Path | None = Field(None, description="YAML/JSON routing table (see docs/gateway.md)")
    routes: str = Field("", description="the routing table inline (YAML/JSON); used when routes_file is unset")
    routes_reload_s: float = Field(
        2.0,
        ge=0,
        description="look at routes_file this often and apply a changed, valid table without a restart (0: never)",
    )
    discovery: Literal["dns", "kubernetes"] = Field(
        "dns",
        description="dns: targets as written (host:port, dns:///name:port); kubernetes: a target naming a Service "
        "(dns:///<svc>.<ns>.svc…:port) becomes its ready pods, followed through the API's EndpointSlices",
    )
    kubeconfig: Path | None = Field(
        None, description="discovery=kubernetes outside a cluster: a kubeconfig file (unset: the pod's service account)"
    )
    backend_token_file: Path | None = Field(
        None,
        description="file holding the bearer token sent to the encoder, LLM and generators (read again when it "
        "changes); needs tls_ca_file",
    )

    default_deadline_s: float = Field(600.0, gt=0, description="deadline for a chat whose caller set none")
    retry_attempts: int = Field(3, ge=1, le=10, description="tries on UNAVAILABLE, each on another replica")
    retry_backoff_ms: float = Field(100.0, ge=0, description="first backoff; doubles per try")
    generator_wake_s: float = Field(
        0.0, ge=0, description="keep retrying an unavailable generator this long (routes scaled to zero)"
    )
    unhealthy_cooldown_s: float = Field(5.0, ge=0, description="skip a replica this long after it failed")
    busy_wait_s: float = Field(
        30.0,
        ge=0,
        description="when every replica of the encoder, the LLM or a generator route answers RESOURCE_EXHAUSTED, "
        "try again with jittered backoff (50 ms doubling to 1 s) this long, at most half the call's time left, "
        "before the chat gets RESOURCE_EXHAUSTED (0: at once)",
    )
    max_reconnect_backoff_ms: int = Field(
        1000, ge=100, le=120_000, description="longest wait between reconnects to a down backend (gRPC's: 120 s)"
    )

    encoder_cache_mb: float = Field(
        64.0, ge=0, description="encoder rows kept by media digest so a turn encodes only its new media (LRU; 0: off)"
    )
    encoder_id_ttl_s: float = Field(
        30.0,
        gt=0,
        description="a turn whose media are all cached first asks the encoder for its id (Info) when the id was "
        "last heard longer ago than this, so cached rows stop being used after a rollout",
    )

    text_delta_interval_ms: float = Field(
        20.0, ge=0, le=1000, description="merge LLM tokens into at most one TextDelta per interval (0: every token)"
    )

    max_turns: int = Field(64, ge=1)
    max_media_items: int = Field(16, ge=1, description="media items in one request, all turns together")
    max_text_chars: int = Field(16_000, ge=1, description="characters of text in one request")
    max_media_mb: float = Field(32.0, gt=0, description="bytes of one media item")
    max_embed_items: int = Field(
        32,
        ge=1,
        description="items (texts and media) in one Embed request; at most the encoder's "
        "MODAVERSE_MAX_ITEMS_PER_REQUEST, which it enforces as well",
    )
    max_concurrent_chats: int = Field(64, ge=1, description="chats in flight; more get RESOURCE_EXHAUSTED")

    @model_validator(mode="after")
    def _backend_token_over_tls(self) -> GatewaySettings:
        # As the SDK and the web front door: a bearer token is never sent in plain text.
        if self.backend_token_file is not None and self.tls_ca_file is None:
            raise ValueError("backend_token_file needs tls_ca_file: the backend token is sent over TLS only")
        return self
