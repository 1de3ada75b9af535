"""Gateway settings (``MODAVERSE_*``). Routes come from a YAML/JSON file or string (Helm renders it)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from modaverse_runtime.settings import ServerSettings


class GatewaySettings(ServerSettings):
    port: int = Field(50050, ge=0, le=65535)
    encoder_targets: str = Field("localhost:50051", description="comma-separated encoder endpoints")
    llm_targets: str = Field("localhost:50052", description="comma-separated LLM endpoints")
    routes_file: Path | None = Field(None, description="YAML/JSON routing table (see docs/gateway.md)")
    routes: str = Field("", description="the routing table inline (YAML/JSON); used when routes_file is unset")

    default_deadline_s: float = Field(600.0, gt=0, description="deadline for a chat whose caller set none")
    retry_attempts: int = Field(3, ge=1, le=10, description="tries on UNAVAILABLE, each on another replica")
    retry_backoff_ms: float = Field(100.0, ge=0, description="first backoff; doubles per try")
    generator_wake_s: float = Field(
        0.0, ge=0, description="keep retrying an unavailable generator this long (routes scaled to zero)"
    )
    unhealthy_cooldown_s: float = Field(5.0, ge=0, description="skip a replica this long after it failed")
    max_reconnect_backoff_ms: int = Field(
        1000, ge=100, le=120_000, description="longest wait between reconnects to a down backend (gRPC's: 120 s)"
    )

    text_delta_interval_ms: float = Field(
        20.0, ge=0, le=1000, description="merge LLM tokens into at most one TextDelta per interval (0: every token)"
    )

    max_turns: int = Field(64, ge=1)
    max_media_items: int = Field(16, ge=1, description="media items in one request, all turns together")
    max_text_chars: int = Field(16_000, ge=1, description="characters of text in one request")
    max_media_mb: float = Field(32.0, gt=0, description="bytes of one media item")
    max_concurrent_chats: int = Field(64, ge=1, description="chats in flight; more get RESOURCE_EXHAUSTED")

    @staticmethod
    def split(targets: str) -> list[str]:
        return [t.strip() for t in targets.split(",") if t.strip()]
