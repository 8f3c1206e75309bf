"""HTTPS with a pinned CA and mutual TLS, against the real host on loopback."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.host import HostServer, TlsConfig
from terminal.acquirer.client import (
    AuthorisationRequest,
    HostFaultError,
    HostUnreachable,
    TlsOptions,
)
from tests.conftest_host import card_emv

if TYPE_CHECKING:
    from tests.conftest_host import TerminalKeys


# TLS is a real socket's: every test here starts its own host under uvicorn with TLS.
pytestmark = pytest.mark.integration

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    ca_key: ec.EllipticCurvePrivateKey | None,
    ca_name: x509.Name | None,
    cn: str,
    *,
    is_ca: bool = False,
    server: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_name or _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(ca_key or key, hashes.SHA256())
    return key, cert


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_key, ca_cert = _issue(None, None, "pipos test acquirer CA", is_ca=True)
    _write(tmp_path / "ca", ca_key, ca_cert)
    server_key, server_cert = _issue(ca_key, ca_cert.subject, "127.0.0.1", server=True)
    _write(tmp_path / "server", server_key, server_cert)
    client_key, client_cert = _issue(ca_key, ca_cert.subject, "terminal-T1")
    _write(tmp_path / "client", client_key, client_cert)
    rogue_key, rogue_cert = _issue(None, None, "rogue CA", is_ca=True)
    _write(tmp_path / "rogue", rogue_key, rogue_cert)
    return {n: tmp_path / n for n in ("ca", "server", "client", "rogue")}


@pytest.fixture
def tls_host(tmp_path: Path, pki: dict[str, Path]) -> Iterator[HostServer]:
    tls = TlsConfig(
        certfile=str(pki["server"].with_suffix(".pem")),
        keyfile=str(pki["server"].with_suffix(".key")),
        client_ca=str(pki["ca"].with_suffix(".pem")),
    )
    server = HostServer(tmp_path / "tls-host.sqlite3", tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _code(server: HostServer, pki: dict[str, Path]) -> str:
    ctx = TlsOptions(
        ca_file=str(pki["ca"].with_suffix(".pem")),
        client_cert=str(pki["client"].with_suffix(".pem")),
        client_key=str(pki["client"].with_suffix(".key")),
    ).context()
    r = httpx.post(server.url + "/admin/activation-codes", json={"merchant_id": "M9"}, verify=ctx)
    return str(r.json()["code"])


def test_mutual_tls_end_to_end(
    tls_host: HostServer,
    pki: dict[str, Path],
    terminal_keys: TerminalKeys,
    acquirer_client_factory: Any,
) -> None:
    assert tls_host.url.startswith("https://127.0.0.1:")
    tls = TlsOptions(
        ca_file=str(pki["ca"].with_suffix(".pem")),
        client_cert=str(pki["client"].with_suffix(".pem")),
        client_key=str(pki["client"].with_suffix(".key")),
    )
    with acquirer_client_factory(tls_host.url, terminal_keys, tls=tls) as client:
        client.enrol(_code(tls_host, pki))
        emv, psn = card_emv("4761739001010010", 1000)
        result = client.authorise(
            AuthorisationRequest(
                amount=1000, currency=826, pan="4761739001010010", pan_sequence=psn, emv=emv
            )
        )
        assert result.approved


def test_without_client_certificate_the_host_is_unreachable(
    tls_host: HostServer,
    pki: dict[str, Path],
    terminal_keys: TerminalKeys,
    acquirer_client_factory: Any,
) -> None:
    tls = TlsOptions(ca_file=str(pki["ca"].with_suffix(".pem")))
    # Under TLS 1.3 the server checks the client certificate after the client considers the
    # handshake done, so the client may only see the connection close: either way it fails
    # as a fault, and the host never reads the request.
    with (
        acquirer_client_factory(tls_host.url, terminal_keys, tls=tls) as client,
        pytest.raises((HostUnreachable, HostFaultError)),
    ):
        client.enrol("any")


def test_a_host_certificate_from_another_ca_is_refused(
    tls_host: HostServer,
    pki: dict[str, Path],
    terminal_keys: TerminalKeys,
    acquirer_client_factory: Any,
) -> None:
    tls = TlsOptions(
        ca_file=str(pki["rogue"].with_suffix(".pem")),
        client_cert=str(pki["client"].with_suffix(".pem")),
        client_key=str(pki["client"].with_suffix(".key")),
    )
    with (
        acquirer_client_factory(tls_host.url, terminal_keys, tls=tls) as client,
        pytest.raises(HostUnreachable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"),
    ):
        client.enrol("any")
