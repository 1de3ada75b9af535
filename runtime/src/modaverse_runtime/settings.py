"""Settings every server shares, read from ``MODAVERSE_*`` environment variables.

Each service subclasses :class:`ServerSettings` with its own fields; the CLI's flags
override the environment (``--port`` beats ``MODAVERSE_PORT``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["tiny", "full"]


def comma_list(value: str) -> list[str]:
    """The non-blank items of a comma-separated setting, stripped (``"a, b,,"`` -> ``["a", "b"]``)."""
    return [item.strip() for item in value.split(",") if item.strip()]


def default_model_dir() -> Path:
    return Path.home() / ".cache" / "modaverse" / "models"


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODAVERSE_", extra="ignore", protected_namespaces=())

    host: str = Field("0.0.0.0", description="Address to bind the gRPC server to")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics HTTP port; 0 = off")
    profile: Profile = Field("tiny", description="tiny: small models built locally; full: real checkpoints")
    model_dir: Path = Field(default_factory=default_model_dir, description="Where tiny models are built")
    max_message_mb: int = Field(64, ge=1, le=2047, description="Largest gRPC message, both directions")
    grace_period_s: float = Field(30.0, ge=0, description="On SIGTERM: time for in-flight calls to finish")
    drain_delay_s: float = Field(
        0.0, ge=0, le=300, description="On SIGTERM: keep accepting calls this long while health says NOT_SERVING"
    )
    max_concurrent_rpcs: int = Field(256, ge=1, description="Calls beyond this get RESOURCE_EXHAUSTED")
    log_level: str = Field("INFO")
    log_json: bool = Field(False, description="One JSON object per log line (for log shippers)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate: serve TLS (and present it to servers we call)"
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(None, description="PEM CA: require client certificates signed by it (mTLS)")
    auth_tokens_file: Path | None = Field(
        None, description="'client-name:token' lines; when set, calls need 'authorization: Bearer <token>'"
    )
    rate_limit_rps: float = Field(0.0, ge=0, description="calls/s per client (token name or address); 0 = off")
    rate_limit_burst: int = Field(20, ge=1, description="calls a client may make at once before the rate applies")
    rate_limit_max_clients: int = Field(
        10_000, ge=1, description="clients the rate limit tracks at once; beyond it the least recently seen is dropped"
    )
    tls_ca_file: Path | None = Field(None, description="PEM CA to verify the servers this process calls (gateway)")
    reflection: bool = Field(True, description="serve gRPC server reflection (grpcurl and other tools)")
    max_connection_age_s: float = Field(
        0.0,
        ge=0,
        description="close each client connection after about this long, so clients resolve DNS again and "
        "reach replicas added since (headless Services); 0 = never",
    )
    max_connection_age_grace_s: float = Field(
        0.0,
        ge=0,
        description="calls still running on a connection closed for its age may take this long before it is cut; "
        "0 = as long as they need",
    )

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 2**20

    @model_validator(mode="after")
    def _tls_pairs(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        return self
