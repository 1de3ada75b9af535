"""TLS and mutual TLS on the shared server: callers without a valid client certificate are refused."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modaverse_runtime.server import ModaverseServer, ServiceSpec
from modaverse_runtime.settings import ServerSettings
from modaverse_runtime.tls import channel_credentials


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = (issuer[0], issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    out: dict[str, Path] = {}
    for ca_name in ("ca", "rogue-ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _cert(ca_name, ca_key, None, ca=True)
        out[ca_name], _ = _write(folder, ca_name, ca_cert, ca_key)
        for leaf in ("server", "client") if ca_name == "ca" else ("client",):
            key = ec.generate_private_key(ec.SECP256R1())
            prefix = "" if ca_name == "ca" else "rogue-"
            out[f"{prefix}{leaf}.crt"], out[f"{prefix}{leaf}.key"] = _write(
                folder, f"{prefix}{leaf}", _cert(leaf, key, (ca_name, ca_key), ca=False), key
            )
    return out


async def _noop() -> None:
    return None


async def _serve(settings: ServerSettings) -> ModaverseServer:
    server = ModaverseServer(ServiceSpec("tls-test", [], lambda s: None, _noop, _noop), settings)
    await server.start()
    await server.wait_ready(5)
    return server


async def _check(port: int, credentials: grpc.ChannelCredentials) -> int:
    async with aio.secure_channel(f"localhost:{port}", credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


async def test_tls_server(pki: dict[str, Path]) -> None:
    server = await _serve(
        ServerSettings(host="127.0.0.1", port=0, tls_cert_file=pki["server.crt"], tls_key_file=pki["server.key"])
    )
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        assert await _check(server.port, creds) == health_pb2.HealthCheckResponse.SERVING
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as plain:  # plaintext callers get nothing
            with pytest.raises(aio.AioRpcError):
                await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=2)
    finally:
        await server.stop(0)


async def test_mutual_tls_refuses_callers_without_a_valid_client_certificate(pki: dict[str, Path]) -> None:
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        tls_cert_file=pki["server.crt"],
        tls_key_file=pki["server.key"],
        tls_client_ca_file=pki["ca"],
    )
    server = await _serve(settings)
    try:
        caller = ServerSettings(tls_ca_file=pki["ca"], tls_cert_file=pki["client.crt"], tls_key_file=pki["client.key"])
        good = channel_credentials(caller)
        assert good is not None
        assert await _check(server.port, good) == health_pb2.HealthCheckResponse.SERVING
        anonymous = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        rogue = grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].read_bytes(),
            private_key=pki["rogue-client.key"].read_bytes(),
            certificate_chain=pki["rogue-client.crt"].read_bytes(),
        )
        for creds in (anonymous, rogue):
            with pytest.raises(aio.AioRpcError) as info:
                await _check(server.port, creds)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


def test_tls_settings_must_pair(pki: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="go together"):
        ServerSettings(tls_cert_file=pki["server.crt"])
    with pytest.raises(ValueError, match="needs tls_cert_file"):
        ServerSettings(tls_client_ca_file=pki["ca"])
