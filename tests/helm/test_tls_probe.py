"""The exec probe the chart renders for TLS servers works against our real server runtime (TLS and mTLS):
exit 0 when SERVING, non-zero while models load (NOT_SERVING) or with the wrong CA."""

from __future__ import annotations

import asyncio
import datetime
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modaverse_runtime.server import ModaverseServer, ServiceSpec
from modaverse_runtime.settings import ServerSettings
from tests.helm.chart import FULLNAME, NAMESPACE, main_container, render

HOST = f"{FULLNAME}-encoder.{NAMESPACE}.svc"
MOUNT = "/etc/modaverse/tls/"


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (cn, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:  # a cert-manager style leaf for the Service's DNS names
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _secret(folder: Path) -> Path:
    """A folder laid out like the mounted kubernetes.io/tls Secret: tls.crt, tls.key, ca.crt."""
    folder.mkdir()
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (folder / "ca.crt").write_bytes(_cert("test-ca", ca_key, None))
    (folder / "tls.crt").write_bytes(_cert(HOST, leaf_key, ("test-ca", ca_key)))
    (folder / "tls.key").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder


def _probe_source(port: int, folder: Path) -> str:
    rendered = render((), ("global.tls.enabled=true", "global.tls.secretName=internal-tls", "global.tls.mtls=true",
                           "gateway.tls.enabled=true", "gateway.tls.secretName=gw-tls"))  # fmt: skip
    container = main_container(rendered.get("Deployment", f"{FULLNAME}-encoder"))
    commands = {tuple(container[p]["exec"]["command"]) for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert len(commands) == 1
    (command,) = commands
    assert command[:2] == ("python", "-c")
    source: str = command[2]
    assert MOUNT in source and "127.0.0.1:50051" in source and HOST in source
    return source.replace(MOUNT, f"{folder}/").replace("127.0.0.1:50051", f"127.0.0.1:{port}")


async def _run_probe(source: str) -> int:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", source)
    return await asyncio.wait_for(proc.wait(), 60)


async def _noop() -> None:
    return None


@pytest.mark.parametrize("mtls", [False, True])
async def test_tls_exec_probe_against_the_runtime_server(tmp_path: Path, mtls: bool) -> None:
    secret = _secret(tmp_path / "secret")
    other = _secret(tmp_path / "other")
    loaded = asyncio.Event()

    async def load() -> None:
        await loaded.wait()

    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        tls_cert_file=secret / "tls.crt",
        tls_key_file=secret / "tls.key",
        tls_client_ca_file=(secret / "ca.crt") if mtls else None,
    )
    server = ModaverseServer(ServiceSpec("probe-test", [], lambda s: None, load, _noop), settings)
    port = await server.start()
    try:
        assert await _run_probe(_probe_source(port, secret)) != 0, "NOT_SERVING while loading must fail the probe"
        loaded.set()
        await server.wait_ready(10)
        assert await _run_probe(_probe_source(port, secret)) == 0
        assert await _run_probe(_probe_source(port, other)) != 0, "a certificate from another CA must fail"
    finally:
        await server.stop(0)
