"""TLS and mutual TLS from PEM files (Kubernetes Secrets mounted as files in the chart).

Server side: with a certificate and key the port is TLS; with a client CA as well, callers
must present a certificate signed by it (mTLS) or the handshake fails. Client side (the gateway
calling the services): the CA verifies the servers, and our own certificate is presented.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from .settings import ServerSettings


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = _read(settings.tls_client_ca_file)
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(settings: ServerSettings) -> grpc.ChannelCredentials | None:
    if settings.tls_ca_file is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=settings.tls_ca_file.read_bytes(),
        private_key=_read(settings.tls_key_file),
        certificate_chain=_read(settings.tls_cert_file),
    )
