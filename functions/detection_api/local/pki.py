"""A throw-away PKI for mutual TLS with a local TAK server (taky) and for the TLS tests.

One directory holds, as PEM files (private keys mode 0600):

- ``ca.pem`` / ``ca.key.pem``: the certificate authority both sides trust;
- ``server.pem`` / ``server.key.pem``: the TAK server, SAN ``DNS:localhost`` and ``IP:127.0.0.1``;
- ``wrong-host-server.pem`` / ``.key.pem``: signed by the CA but for another host name
  (hostname-mismatch tests);
- ``<client>.pem`` / ``<client>.key.pem`` for each client name (default ``forwarder`` and
  ``subscriber``), with ``<client>.p12`` (certificate, key and CA, password-protected);
- ``wrong-ca.pem`` / ``wrong-ca.key.pem`` and ``wrong-ca-client.pem`` / ``.key.pem``: an unrelated
  CA and a client certificate from it, which the server must reject.

RSA 2048 keys, because real TAK clients (ATAK, WinTAK) expect them; generation takes ~0.4 s.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAME = "localhost"
WRONG_SERVER_NAME = "wrong-host.invalid"
DEFAULT_CLIENTS: tuple[str, ...] = ("forwarder", "subscriber")
DEFAULT_P12_PASSWORD = "detection-api-local"  # noqa: S105 (a local throw-away test PKI)  # nosec B105 # password of the generated local test PKI, printed in the docs
DEFAULT_VALID_DAYS = 825
# Reuse a stored PKI only if it stays valid at least this long.
_MIN_REMAINING = dt.timedelta(days=1)


@dataclass(frozen=True)
class CertKeyPaths:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClientPaths(CertKeyPaths):
    p12: Path
    p12_password: str


@dataclass(frozen=True)
class PkiPaths:
    """Where each generated file is (see the module docstring)."""

    directory: Path
    ca: CertKeyPaths
    server: CertKeyPaths
    wrong_host_server: CertKeyPaths
    clients: dict[str, ClientPaths]
    wrong_ca: CertKeyPaths
    wrong_ca_client: CertKeyPaths

    @property
    def server_name(self) -> str:
        return SERVER_NAME

    def client(self, name: str = "forwarder") -> ClientPaths:
        return self.clients[name]


def pki_paths(
    directory: Path,
    clients: tuple[str, ...] = DEFAULT_CLIENTS,
    p12_password: str = DEFAULT_P12_PASSWORD,
) -> PkiPaths:
    """The file layout of a PKI in ``directory`` (whether or not it exists yet)."""
    directory = Path(directory).resolve()

    def pair(stem: str) -> CertKeyPaths:
        return CertKeyPaths(directory / f"{stem}.pem", directory / f"{stem}.key.pem")

    return PkiPaths(
        directory=directory,
        ca=pair("ca"),
        server=pair("server"),
        wrong_host_server=pair("wrong-host-server"),
        clients={
            name: ClientPaths(
                cert=directory / f"{name}.pem",
                key=directory / f"{name}.key.pem",
                p12=directory / f"{name}.p12",
                p12_password=p12_password,
            )
            for name in clients
        },
        wrong_ca=pair("wrong-ca"),
        wrong_ca_client=pair("wrong-ca-client"),
    )


def generate_pki(
    directory: Path,
    clients: tuple[str, ...] = DEFAULT_CLIENTS,
    p12_password: str = DEFAULT_P12_PASSWORD,
    valid_days: int = DEFAULT_VALID_DAYS,
) -> PkiPaths:
    """Create a fresh PKI in ``directory`` (overwriting one that is there)."""
    if not clients:
        raise ValueError("at least one client certificate is needed")
    paths = pki_paths(directory, clients, p12_password)
    paths.directory.mkdir(parents=True, exist_ok=True)
    validity = _Validity.starting_now(valid_days)

    ca = _Issuer.self_signed("Detection API local CA", validity)
    ca.write(paths.ca)
    server = ca.issue(SERVER_NAME, validity, server_names=(SERVER_NAME, "127.0.0.1"))
    server.write(paths.server)
    ca.issue(WRONG_SERVER_NAME, validity, server_names=(WRONG_SERVER_NAME,)).write(
        paths.wrong_host_server
    )
    for name, client_paths in paths.clients.items():
        client = ca.issue(name, validity, client=True)
        client.write(client_paths)
        _write_file(
            client_paths.p12,
            pkcs12.serialize_key_and_certificates(
                name=name.encode(),
                key=client.key,
                cert=client.cert,
                cas=[ca.cert],
                encryption_algorithm=serialization.BestAvailableEncryption(p12_password.encode()),
            ),
            private=True,
        )

    wrong_ca = _Issuer.self_signed("Unrelated CA", validity)
    wrong_ca.write(paths.wrong_ca)
    wrong_ca.issue("wrong-ca-client", validity, client=True).write(paths.wrong_ca_client)
    return paths


def ensure_pki(
    directory: Path,
    clients: tuple[str, ...] = DEFAULT_CLIENTS,
    p12_password: str = DEFAULT_P12_PASSWORD,
) -> PkiPaths:
    """The PKI in ``directory``, made anew only if a file is missing or a certificate expires."""
    paths = pki_paths(directory, clients, p12_password)
    if _is_complete_and_valid(paths):
        return paths
    return generate_pki(directory, clients, p12_password)


def _is_complete_and_valid(paths: PkiPaths) -> bool:
    pairs = [paths.ca, paths.server, paths.wrong_host_server, paths.wrong_ca, paths.wrong_ca_client]
    pairs += list(paths.clients.values())
    files = [p.cert for p in pairs] + [p.key for p in pairs]
    files += [c.p12 for c in paths.clients.values()]
    if not all(f.is_file() for f in files):
        return False
    horizon = dt.datetime.now(dt.UTC) + _MIN_REMAINING
    try:
        certs = [x509.load_pem_x509_certificate(p.cert.read_bytes()) for p in pairs]
    except ValueError:
        return False
    ca_subject = certs[0].subject
    signed_by_ca = [paths.server, paths.wrong_host_server, *paths.clients.values()]
    return all(c.not_valid_after_utc > horizon for c in certs) and all(
        x509.load_pem_x509_certificate(p.cert.read_bytes()).issuer == ca_subject
        for p in signed_by_ca
    )


@dataclass(frozen=True)
class _Validity:
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def starting_now(cls, days: int) -> _Validity:
        now = dt.datetime.now(dt.UTC)
        # An hour back tolerates small clock differences between processes and hosts.
        return cls(now - dt.timedelta(hours=1), now + dt.timedelta(days=days))


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    def write(self, paths: CertKeyPaths) -> None:
        _write_file(
            paths.key,
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            private=True,
        )
        _write_file(paths.cert, self.cert.public_bytes(serialization.Encoding.PEM))


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a leaf signs and enciphers keys (TLS)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class _Issuer(_Issued):
    @classmethod
    def self_signed(cls, common_name: str, validity: _Validity) -> _Issuer:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            _builder(name, name, key, validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def issue(
        self,
        common_name: str,
        validity: _Validity,
        *,
        server_names: tuple[str, ...] = (),
        client: bool = False,
    ) -> _Issued:
        """A leaf certificate: a server one for ``server_names``, or a client one."""
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            _builder(subject, self.cert.subject, key, validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]),
                critical=False,
            )
        return _Issued(builder.sign(self.key, hashes.SHA256()), key)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey, validity: _Validity
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (a reader never sees half a key); private files are 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        if not private:
            os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
