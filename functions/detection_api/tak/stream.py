"""The wire under a TAK connection: where to connect, TLS, failures in words an operator can act
on, and one TCP/TLS socket that writes whole events and reads through ``tak_reader``.

Nothing here knows about confirmation modes (see ``tak_transport`` and ``tak_confirm``), Redis or
rq. Every failure to reach or talk to the server is a :class:`TakOutage` whose ``kind`` says what
went wrong (wrong CA, rejected client certificate, host name mismatch, refused, reset, a peer
sending an endless event). A live connection that does not answer in time raises
:class:`TakConfirmTimeout`.

Two rules keep the stream parseable by the strictest server (FreeTAKServer drops a whole read, and
the client, when the read ends inside an event or a UTF-8 character; OpenTAKServer loses an event
that shares a write with part of the next): every write holds whole events only, and a TLS record
never holds part of an event unless that one event is larger than a record.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator, Sequence
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

from detection_api.tak.reader import (
    MAX_UNFINISHED_EVENT_BYTES,
    CotStreamReader,
    SeenEvent,
    StreamTooLarge,
)

if TYPE_CHECKING:
    from detection_api.settings import Settings

log = logging.getLogger(__name__)

# Largest UDP payload over IPv4; a CoT event above it can never be sent as one datagram.
MAX_UDP_EVENT_BYTES = 65_507
_RECV_BYTES = 65_536
# Plaintext bytes per TLS record we write. taky reads 4,096 bytes per readiness event; the rest of
# a bigger record stays decrypted inside its TLS object where select() cannot see it, so the tail
# of a batch (and its ping) would wait for the next write. Records of at most 4 KiB are read whole.
TLS_RECORD_BYTES = 4_096
CONNECT_TIMEOUT_SECONDS = 5.0  # TCP connect, and then the TLS handshake
FIRST_PONG_MAX_SECONDS = 5.0  # a fresh connection must answer its first ping within this...
# ...of silence: on connect a server may first replay every event it keeps (taky: all not yet
# stale), which we must read through before the pong. Data flowing extends the wait up to this.
FIRST_PONG_STREAMING_MAX_SECONDS = 30.0
# Plaintext bytes per write on plain TCP: whole events only, up to this much.
TCP_WRITE_BYTES = 65_536


class OutageKind(StrEnum):
    UNREACHABLE = "unreachable"  # refused, no route, DNS, connect timeout
    CLOSED = "closed"  # the server closed or reset an established connection
    TLS_SERVER_CERT = "tls_server_certificate"  # we rejected the server (wrong CA, expired)
    TLS_HOSTNAME = "tls_hostname_mismatch"  # server certificate is for another name
    TLS_CLIENT_CERT = "tls_client_certificate"  # the server rejected our client certificate
    TLS_CONFIG = "tls_config"  # our own certificate files are missing or unreadable
    TLS_OTHER = "tls_error"  # any other TLS failure
    NO_PONG = "no_pong"  # a fresh connection never answered the ping (input-only port?)
    NO_READBACK = "no_readback"  # TAK_CONFIRM=readback, but the server relayed nothing back
    OVERSIZED_EVENT = "oversized_event"  # the server sent an event larger than we accept


class TakError(Exception):
    """Base of everything this module raises."""


class TakOutage(TakError):
    """The TAK server cannot be reached or talked to. Never the fault of the events in flight."""

    def __init__(self, kind: OutageKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message


class TakConfirmTimeout(TakError):
    """A connection that looked alive did not answer the ping in time."""


# --- where to connect ----------------------------------------------------------------------------


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


# --- failures ------------------------------------------------------------------------------------


def outage_from_os_error(exc: OSError, during: str) -> TakOutage:
    if isinstance(exc, ssl.SSLError):
        return _outage_from_tls_error(exc, during)
    if isinstance(exc, ConnectionRefusedError):
        return TakOutage(OutageKind.UNREACHABLE, f"connection refused ({during})")
    if isinstance(exc, ConnectionError):  # reset, aborted, broken pipe
        return TakOutage(OutageKind.CLOSED, f"{exc.strerror or exc} ({during})")
    if isinstance(exc, TimeoutError | socket.gaierror) or exc.errno in {
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }:
        return TakOutage(OutageKind.UNREACHABLE, f"{exc} ({during})")
    return TakOutage(OutageKind.CLOSED, f"{exc} ({during})")


_CLIENT_CERT_REJECTED = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)


def _outage_from_tls_error(exc: ssl.SSLError, during: str) -> TakOutage:
    if isinstance(exc, ssl.SSLCertVerificationError):
        # 62 = X509_V_ERR_HOSTNAME_MISMATCH, 64 = X509_V_ERR_IP_ADDRESS_MISMATCH
        if exc.verify_code in {62, 64}:
            return TakOutage(
                OutageKind.TLS_HOSTNAME,
                f"server certificate does not match the host name: {exc.verify_message} "
                "(set TAK_TLS_SERVER_NAME or fix TAK_URL)",
            )
        return TakOutage(
            OutageKind.TLS_SERVER_CERT,
            f"server certificate rejected: {exc.verify_message} (is TAK_TLS_CA the server's CA?)",
        )
    reason = exc.reason or ""
    if any(marker in reason for marker in _CLIENT_CERT_REJECTED):
        return TakOutage(
            OutageKind.TLS_CLIENT_CERT,
            f"the server rejected our client certificate ({reason}, {during}): "
            "is TAK_TLS_CERT issued by the CA the server trusts?",
        )
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return TakOutage(OutageKind.CLOSED, f"TLS connection closed by the server ({during})")
    return TakOutage(OutageKind.TLS_OTHER, f"{reason or exc} ({during})")


REJECTION_KINDS = frozenset({OutageKind.CLOSED, OutageKind.TLS_CLIENT_CERT})


# --- one stream socket ---------------------------------------------------------------------------


def whole_event_writes(events: Sequence[bytes], limit: int) -> Iterator[bytes]:
    """``events`` joined into writes of at most ``limit`` bytes, never splitting an event (an
    event larger than ``limit`` is a write of its own)."""
    chunk: list[bytes] = []
    size = 0
    for event in events:
        if chunk and size + len(event) > limit:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(event)
        size += len(event)
    if chunk:
        yield b"".join(chunk)


class CotSocket:
    """One TCP or TLS connection to a TAK server: whole-event writes, parsed reads."""

    def __init__(
        self,
        endpoint: TakEndpoint,
        context: ssl.SSLContext | None,
        server_name: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        write_timeout: float = 10.0,
        max_unfinished: int = MAX_UNFINISHED_EVENT_BYTES,
    ) -> None:
        self.endpoint = endpoint
        self._context = context
        self._server_name = server_name
        self._connect_timeout = connect_timeout
        self._write_timeout = write_timeout
        self._reader = CotStreamReader(max_unfinished)
        self._sock: socket.socket | None = None
        self.oversized_events = 0

    @property
    def open(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """TCP connect and, for TLS, the handshake. Raises TakOutage."""
        during = f"connecting to {self.endpoint}"
        try:
            raw = socket.create_connection(
                (self.endpoint.host, self.endpoint.port), timeout=self._connect_timeout
            )
        except OSError as exc:
            raise outage_from_os_error(exc, during) from exc
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(raw, server_hostname=self._server_name)
            else:
                sock = raw
        except OSError as exc:
            raw.close()
            raise outage_from_os_error(exc, f"TLS handshake with {self.endpoint}") from exc
        self._sock = sock

    def fileno(self) -> int:
        return self._require().fileno()

    @property
    def buffered(self) -> bool:
        """Decrypted bytes wait inside the TLS object, where select() cannot see them."""
        sock = self._sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def write(self, events: Sequence[bytes]) -> None:
        """Write whole events (see :func:`whole_event_writes`). Raises TakOutage, or
        TakConfirmTimeout when the server stops reading."""
        sock = self._require()
        limit = TLS_RECORD_BYTES if isinstance(sock, ssl.SSLSocket) else TCP_WRITE_BYTES
        try:
            sock.settimeout(self._write_timeout)
            for data in whole_event_writes(events, limit):
                sock.sendall(data)
        except TimeoutError as exc:
            self.abort()
            raise TakConfirmTimeout(f"{self.endpoint} stopped reading our events") from exc
        except OSError as exc:
            self.abort()
            raise outage_from_os_error(exc, f"sending to {self.endpoint}") from exc

    def read(self, timeout: float) -> list[SeenEvent] | None:
        """The events completed by what arrives within ``timeout``; None if nothing arrived."""
        sock = self._require()
        try:
            sock.settimeout(timeout)
            data = sock.recv(_RECV_BYTES)
        except TimeoutError:
            return None
        except ssl.SSLWantReadError:
            return None
        except OSError as exc:
            self.abort()
            raise outage_from_os_error(exc, f"reading from {self.endpoint}") from exc
        if not data:
            self.abort()
            raise TakOutage(OutageKind.CLOSED, f"{self.endpoint} closed the connection")
        try:
            return self._reader.feed_events(data)
        except StreamTooLarge as exc:
            self.abort()
            self.oversized_events += 1
            raise TakOutage(OutageKind.OVERSIZED_EVENT, f"{exc} ({self.endpoint})") from exc

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise TakOutage(OutageKind.CLOSED, f"not connected to {self.endpoint}")
        return self._sock

    def abort(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self, drain_seconds: float = 0.5) -> None:
        """Close cleanly: read what the server still sends (unread TLS 1.3 session tickets make
        the peer see a reset), then TLS close_notify (``unwrap``) and TCP FIN."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            deadline = time.monotonic() + drain_seconds
            sock.settimeout(0.05)
            while time.monotonic() < deadline:
                try:
                    if not sock.recv(_RECV_BYTES):
                        break
                except TimeoutError:
                    break
            sock.settimeout(drain_seconds)
            if isinstance(sock, ssl.SSLSocket):
                sock = sock.unwrap()
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass  # the peer went first; nothing left to protect
        finally:
            with contextlib.suppress(OSError):
                sock.close()
