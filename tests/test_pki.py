"""The local PKI: what each certificate says, that real TLS handshakes accept and reject the right
peers (Python's ssl over a socket pair, both sides real), file modes, and reuse."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from detection_api.local.pki import (
    WRONG_SERVER_NAME,
    PkiPaths,
    ensure_pki,
    generate_pki,
    pki_paths,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PkiPaths:
    return generate_pki(tmp_path_factory.mktemp("pki"))


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _handshake(
    server_cert,
    server_key,
    server_ca,
    client_ca,
    client_cert=None,
    client_key=None,
    server_name="localhost",
) -> tuple[Exception | None, Exception | None]:
    """A real mutual-TLS handshake over a socket pair; returns (server error, client error)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(server_ca)
    server_ctx.load_cert_chain(server_cert, server_key)
    client_ctx = ssl.create_default_context(cafile=str(client_ca))
    if client_cert:
        client_ctx.load_cert_chain(client_cert, client_key)

    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)
    errors: dict[str, Exception | None] = {"server": None, "client": None}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                tls.sendall(b"hello")  # TLS 1.3: the client's certificate is checked by now
        except (ssl.SSLError, OSError) as exc:
            errors["server"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(right, server_hostname=server_name) as tls:
            if tls.recv(5) != b"hello":
                raise ConnectionError("no data from the server")
    except (ssl.SSLError, OSError) as exc:
        errors["client"] = exc
    thread.join(10)
    return errors["server"], errors["client"]


def test_server_certificate_names_localhost_and_loopback(pki):
    cert = _cert(pki.server.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.issuer == _cert(pki.ca.cert).subject


def test_client_certificates_are_for_client_auth_only(pki):
    for name in ("forwarder", "subscriber"):
        cert = _cert(pki.client(name).cert)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert cert.issuer == _cert(pki.ca.cert).subject


def test_private_keys_are_readable_by_the_owner_only(pki):
    private = [pki.ca.key, pki.server.key, pki.wrong_host_server.key, pki.wrong_ca.key]
    private += [pki.wrong_ca_client.key]
    private += [c.key for c in pki.clients.values()] + [c.p12 for c in pki.clients.values()]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(pki.ca.cert.stat().st_mode) == 0o644


def test_mutual_tls_accepts_the_ca_signed_client(pki):
    client = pki.client("forwarder")
    assert _handshake(
        pki.server.cert, pki.server.key, pki.ca.cert, pki.ca.cert, client.cert, client.key
    ) == (None, None)


def test_mutual_tls_rejects_a_client_from_the_wrong_ca(pki):
    server_error, client_error = _handshake(
        pki.server.cert, pki.server.key, pki.ca.cert, pki.ca.cert,
        pki.wrong_ca_client.cert, pki.wrong_ca_client.key,
    )  # fmt: skip
    assert isinstance(server_error, ssl.SSLError)
    assert "certificate verify failed" in str(server_error)
    assert client_error is not None


def test_mutual_tls_rejects_a_client_without_a_certificate(pki):
    server_error, client_error = _handshake(
        pki.server.cert, pki.server.key, pki.ca.cert, pki.ca.cert
    )
    assert isinstance(server_error, ssl.SSLError)
    assert client_error is not None


def test_client_rejects_the_wrong_host_server_certificate(pki):
    client = pki.client("forwarder")
    _, client_error = _handshake(
        pki.wrong_host_server.cert, pki.wrong_host_server.key, pki.ca.cert, pki.ca.cert,
        client.cert, client.key,
    )  # fmt: skip
    assert isinstance(client_error, ssl.SSLCertVerificationError)
    assert "Hostname mismatch" in str(client_error)
    # The same certificate is fine for the name it was made for.
    assert _handshake(
        pki.wrong_host_server.cert, pki.wrong_host_server.key, pki.ca.cert, pki.ca.cert,
        client.cert, client.key, server_name=WRONG_SERVER_NAME,
    ) == (None, None)  # fmt: skip


def test_p12_holds_the_client_certificate_key_and_ca(pki):
    client = pki.client("forwarder")
    bundle = pkcs12.load_pkcs12(client.p12.read_bytes(), client.p12_password.encode())
    assert bundle.cert.certificate == _cert(client.cert)
    assert [c.certificate for c in bundle.additional_certs] == [_cert(pki.ca.cert)]
    assert bundle.key is not None
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(client.p12.read_bytes(), b"wrong password")


def test_ensure_pki_reuses_a_complete_pki_and_repairs_an_incomplete_one(tmp_path):
    first = ensure_pki(tmp_path / "pki")
    ca_bytes = first.ca.cert.read_bytes()
    assert ensure_pki(tmp_path / "pki").ca.cert.read_bytes() == ca_bytes  # reused

    first.client("subscriber").key.unlink()
    repaired = ensure_pki(tmp_path / "pki")
    assert repaired.client("subscriber").key.is_file()
    assert repaired.ca.cert.read_bytes() != ca_bytes  # a new, consistent set
    assert _cert(repaired.server.cert).issuer == _cert(repaired.ca.cert).subject


def test_paths_layout_needs_no_files(tmp_path):
    paths = pki_paths(tmp_path, clients=("a",))
    assert paths.client("a").cert == tmp_path.resolve() / "a.pem"
    assert not paths.ca.cert.exists()


def test_generate_pki_needs_a_client(tmp_path):
    with pytest.raises(ValueError, match="client"):
        generate_pki(tmp_path, clients=())
