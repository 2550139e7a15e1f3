"""Where a TAK server is (``TAK_URL``) and the certificate material to reach it over mutual TLS."""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)

from detection_api.tak.errors import OutageKind, TakOutage

if TYPE_CHECKING:
    from detection_api.settings import Settings


class Scheme(StrEnum):
    TLS = "tls"
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class TakEndpoint:
    scheme: Scheme
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> TakEndpoint:
        """``tls://host:8089``, ``tcp://host:8087``, ``udp://host:port`` (``ssl://`` = tls)."""
        parts = urlsplit(url)
        scheme_text = "tls" if parts.scheme == "ssl" else parts.scheme
        try:
            scheme = Scheme(scheme_text)
        except ValueError as exc:
            raise ValueError(f"TAK_URL {url!r}: scheme must be tls, tcp or udp") from exc
        if not parts.hostname or parts.port is None:
            raise ValueError(f"TAK_URL {url!r} needs a host and a port")
        return cls(scheme, parts.hostname, parts.port)

    def __str__(self) -> str:
        return f"{self.scheme.value}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Certificate material for mutual TLS (PEM files, or one PKCS#12 bundle)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    p12: str | None = None
    p12_password: str | None = field(default=None, repr=False)  # a secret: never in a repr
    server_name: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsFiles:
        password = settings.tak_tls_p12_password  # SecretStr: unwrapped only here
        return cls(
            ca=settings.tak_tls_ca,
            cert=settings.tak_tls_cert,
            key=settings.tak_tls_key,
            p12=settings.tak_tls_p12,
            p12_password=password.get_secret_value() if password else None,
            server_name=settings.tak_tls_server_name,
        )


def build_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A client context that verifies the server against ``files.ca`` and presents our certificate.

    The stdlib context is used directly rather than pytak's ``get_ssl_ctx``: it reads pytak's own
    configuration keys and its options to switch verification off are exactly what we never want;
    four explicit calls are easier to audit.
    """
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and host name
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if files.ca:
            context.load_verify_locations(cafile=files.ca)
        else:
            context.load_default_certs()
        if files.p12:
            _load_p12_chain(context, Path(files.p12), files.p12_password)
        elif files.cert:
            context.load_cert_chain(certfile=files.cert, keyfile=files.key or None)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TakOutage(OutageKind.TLS_CONFIG, f"cannot load TLS files: {exc}") from exc
    return context


def _load_p12_chain(context: ssl.SSLContext, path: Path, password: str | None) -> None:
    # ssl can only load a certificate chain from a file: write a private (0600) PEM, load it,
    # delete it at once. The key never stays on disk.
    key, cert, extra = pkcs12.load_key_and_certificates(
        path.read_bytes(), password.encode() if password else None
    )
    if key is None or cert is None:
        raise ValueError(f"{path} holds no private key and certificate")
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    pem += cert.public_bytes(Encoding.PEM)
    pem += b"".join(c.public_bytes(Encoding.PEM) for c in extra or ())
    fd, name = tempfile.mkstemp(prefix="tak-client-", suffix=".pem")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        context.load_cert_chain(certfile=name)
    finally:
        os.unlink(name)
