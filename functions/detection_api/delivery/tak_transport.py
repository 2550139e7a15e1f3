"""One connection to a TAK server: send CoT events, and know when the server has processed them.

Streaming TAK (TCP, TLS) has exactly one application-level acknowledgement: a ping event
(``t-x-c-t``) answered by a pong (``t-x-c-t-r``). The server handles a connection's events in
order, so the n-th pong proves that everything written before the n-th ping was processed. A
successful ``sendall`` proves nothing. UDP has no answer at all: it is best effort and says so.

This module knows sockets and TLS, nothing about Redis or rq. Every failure to reach or talk to the
server is a :class:`TakOutage` whose ``kind`` says what went wrong in words an operator can act on
(wrong CA, rejected client certificate, host name mismatch, refused, reset). A live connection
that does not answer in time raises :class:`TakConfirmTimeout`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import ssl
import tempfile
import time
import xml.etree.ElementTree as ET  # nosec B405 # expat >= 2.4 caps entity amplification and resolves no external entities
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)

from detection_api.cot import PONG_TYPE, build_ping

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


class OutageKind(StrEnum):
    UNREACHABLE = "unreachable"  # refused, no route, DNS, connect timeout
    CLOSED = "closed"  # the server closed or reset an established connection
    TLS_SERVER_CERT = "tls_server_certificate"  # we rejected the server (wrong CA, expired)
    TLS_HOSTNAME = "tls_hostname_mismatch"  # server certificate is for another name
    TLS_CLIENT_CERT = "tls_client_certificate"  # the server rejected our client certificate
    TLS_CONFIG = "tls_config"  # our own certificate files are missing or unreadable
    TLS_OTHER = "tls_error"  # any other TLS failure
    NO_PONG = "no_pong"  # a fresh connection never answered the ping (input-only port?)


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
    p12_password: str | None = None
    server_name: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsFiles:
        password = settings.tak_tls_p12_password  # SecretStr: read only here
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


# --- reading the incoming stream -----------------------------------------------------------------

_XML_DECLARATION = re.compile(rb"<\?xml[^>]*\?>")


class CotStreamReader:
    """Incremental parser of the server's byte stream: yields the type of each ``<event>``.

    The server sends pongs, but also every event other clients publish, each possibly with its own
    ``<?xml ...?>`` declaration, split anywhere across reads. The stream is parsed as the children
    of a made-up root element; declarations are removed (a second one would be a syntax error).
    """

    def __init__(self) -> None:
        self._held_back = b""
        self._parser = self._new_parser()
        self._depth = 0
        self._root: ET.Element | None = None

    @staticmethod
    def _new_parser() -> ET.XMLPullParser:
        parser = ET.XMLPullParser(events=("start", "end"))
        parser.feed(b"<stream>")
        return parser

    def feed(self, data: bytes) -> list[str]:
        data = _XML_DECLARATION.sub(b"", self._held_back + data)
        data, self._held_back = _split_unfinished_declaration(data)
        try:
            self._parser.feed(data)
            return list(self._event_types())
        except ET.ParseError as exc:
            # A malformed event from the server: start afresh. If a pong was inside it, the
            # confirmation times out and the batch is sent again (at least once).
            log.warning("unparseable data from the TAK server, resetting the reader: %s", exc)
            self._parser = self._new_parser()
            self._depth = 0
            self._root = None
            return []

    def _event_types(self) -> Iterator[str]:
        for kind, element in self._parser.read_events():
            assert isinstance(element, ET.Element)
            if kind == "start":
                self._depth += 1
                if self._depth == 1:
                    self._root = element
                continue
            self._depth -= 1
            if self._depth == 1 and element.tag == "event":
                yield element.get("type", "")
                if self._root is not None:
                    self._root.clear()  # keep memory flat on a long-lived connection


def _split_unfinished_declaration(data: bytes) -> tuple[bytes, bytes]:
    """Hold back a tail that may be the start of an XML declaration completed by the next read."""
    start = data.rfind(b"<")
    if start < 0:
        return data, b""
    tail = data[start:]
    if b"<?xml".startswith(tail) or (tail.startswith(b"<?xml") and b"?>" not in tail):
        return data[:start], tail
    return data, b""


# --- connections ---------------------------------------------------------------------------------


class TakConnection(Protocol):
    """What the forwarder needs from a connection."""

    endpoint: TakEndpoint
    confirms: bool  # False for UDP: nothing is ever acknowledged

    @property
    def connected(self) -> bool: ...

    def connect(self) -> None: ...

    def send(self, events: Sequence[bytes]) -> int:
        """Write events (and for streams, one ping after them). Returns the ping's sequence."""
        ...

    def wait_confirmed(self, ping_seq: int, timeout: float) -> None:
        """Block until the pong for ``ping_seq`` has arrived (streams only)."""
        ...

    def close(self) -> None: ...


def _outage_from_os_error(exc: OSError, during: str) -> TakOutage:
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


_REJECTION_KINDS = frozenset({OutageKind.CLOSED, OutageKind.TLS_CLIENT_CERT})


class StreamTakConnection:
    """TCP or TLS: events and pings on one socket, pongs counted by an incremental reader."""

    confirms = True

    def __init__(
        self,
        endpoint: TakEndpoint,
        *,
        tls: TlsFiles | None = None,
        client_uid: str = "detection-api-forwarder",
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        handshake_confirm_timeout: float = FIRST_PONG_MAX_SECONDS,
        write_timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self._tls = tls or TlsFiles()
        self._server_name = self._tls.server_name or endpoint.host
        self._ping_uid = f"{client_uid}-ping"
        self._connect_timeout = connect_timeout
        self._handshake_confirm_timeout = handshake_confirm_timeout
        self._write_timeout = write_timeout
        self._sock: socket.socket | None = None
        self._reader = CotStreamReader()
        self._pings_sent = 0
        self._pongs_received = 0
        self.routed_events_skipped = 0  # other clients' events the server sent us

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Connect, finish TLS, and prove the server answers with one ping round trip.

        With TLS 1.3 a server that rejects our client certificate says so only on our next read:
        without the round trip a rejected connection would look up.
        """
        self.close()
        self._reader = CotStreamReader()
        self._pings_sent = self._pongs_received = 0
        # Built on every connect: certificates rotated on disk are picked up by the next reconnect.
        context = build_ssl_context(self._tls) if self.endpoint.scheme is Scheme.TLS else None
        during = f"connecting to {self.endpoint}"
        try:
            raw = socket.create_connection(
                (self.endpoint.host, self.endpoint.port), timeout=self._connect_timeout
            )
        except OSError as exc:
            raise _outage_from_os_error(exc, during) from exc
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if context is not None:
                sock: socket.socket = context.wrap_socket(raw, server_hostname=self._server_name)
            else:
                sock = raw
        except OSError as exc:
            raw.close()
            raise _outage_from_os_error(exc, f"TLS handshake with {self.endpoint}") from exc
        self._sock = sock
        try:
            seq = self.send(())
            self.wait_confirmed(
                seq,
                self._handshake_confirm_timeout,
                while_receiving=FIRST_PONG_STREAMING_MAX_SECONDS,
            )
        except TakConfirmTimeout as exc:
            self._abort()
            raise TakOutage(
                OutageKind.NO_PONG,
                f"{self.endpoint} accepted the connection but never answered a ping "
                "(an input-only port? TAK Server needs its streaming port, e.g. 8089)",
            ) from exc
        except TakOutage as exc:
            self._abort()
            has_identity = bool(self._tls.cert or self._tls.p12)
            if context is not None and not has_identity and exc.kind in _REJECTION_KINDS:
                raise TakOutage(
                    OutageKind.TLS_CLIENT_CERT,
                    f"{self.endpoint} refused the connection during TLS set-up: no client "
                    "certificate is configured (TAK_TLS_CERT and TAK_TLS_KEY, or TAK_TLS_P12)",
                ) from exc
            if context is not None and exc.kind is OutageKind.CLOSED:
                # A TLS server that hangs up before answering the first ping has, in practice,
                # refused our client certificate.
                raise TakOutage(
                    OutageKind.TLS_CLIENT_CERT,
                    f"{self.endpoint} closed the connection during TLS set-up; it probably "
                    "rejected our client certificate (is TAK_TLS_CERT issued by its CA?)",
                ) from exc
            raise

    def send(self, events: Sequence[bytes]) -> int:
        sock = self._require_socket()
        ping = build_ping(self._ping_uid, datetime.now(UTC))
        try:
            sock.settimeout(self._write_timeout)
            data = b"".join((*events, ping))
            if isinstance(sock, ssl.SSLSocket):
                view = memoryview(data)
                for start in range(0, len(data), TLS_RECORD_BYTES):
                    sock.sendall(view[start : start + TLS_RECORD_BYTES])
            else:
                sock.sendall(data)
        except TimeoutError as exc:
            self._abort()
            raise TakConfirmTimeout(f"{self.endpoint} stopped reading our events") from exc
        except OSError as exc:
            self._abort()
            raise _outage_from_os_error(exc, f"sending to {self.endpoint}") from exc
        self._pings_sent += 1
        return self._pings_sent

    def wait_confirmed(self, ping_seq: int, timeout: float, *, while_receiving: float = 0) -> None:
        """Wait for the pong of ping ``ping_seq``. With ``while_receiving``, incoming data
        restarts the timeout, up to that many seconds in all."""
        started = time.monotonic()
        deadline = started + timeout
        hard_deadline = started + max(timeout, while_receiving)
        while self._pongs_received < ping_seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._abort()  # a late pong would confirm the wrong batch: start afresh
                raise TakConfirmTimeout(f"no pong from {self.endpoint} within {timeout:g} s")
            if self._read_once(remaining) and while_receiving:
                deadline = min(hard_deadline, time.monotonic() + timeout)

    def _read_once(self, timeout: float) -> bool:
        """Read what arrives within ``timeout``; True if anything did."""
        sock = self._require_socket()
        try:
            sock.settimeout(timeout)
            data = sock.recv(_RECV_BYTES)
        except TimeoutError:
            return False
        except OSError as exc:
            self._abort()
            raise _outage_from_os_error(exc, f"reading from {self.endpoint}") from exc
        if not data:
            self._abort()
            raise TakOutage(OutageKind.CLOSED, f"{self.endpoint} closed the connection")
        for event_type in self._reader.feed(data):
            if event_type == PONG_TYPE:
                self._pongs_received += 1
            else:
                self.routed_events_skipped += 1
        return True

    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise TakOutage(OutageKind.CLOSED, f"not connected to {self.endpoint}")
        return self._sock

    def _abort(self) -> None:
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


class UdpTakConnection:
    """Best effort: one event per datagram, nothing ever confirmed."""

    confirms = False

    def __init__(self, endpoint: TakEndpoint) -> None:
        self.endpoint = endpoint
        self._sock: socket.socket | None = None
        self._address: tuple[str, int] | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        self.close()
        try:
            info = socket.getaddrinfo(
                self.endpoint.host, self.endpoint.port, type=socket.SOCK_DGRAM
            )[0]
        except OSError as exc:
            raise _outage_from_os_error(exc, f"resolving {self.endpoint}") from exc
        family, kind, proto, _, address = info
        self._sock = socket.socket(family, kind, proto)
        self._address = (str(address[0]), int(address[1]))

    def send(self, events: Sequence[bytes]) -> int:
        if self._sock is None or self._address is None:
            raise TakOutage(OutageKind.CLOSED, f"not connected to {self.endpoint}")
        try:
            for event in events:
                self._sock.sendto(event, self._address)
        except OSError as exc:
            self.close()
            raise _outage_from_os_error(exc, f"sending to {self.endpoint}") from exc
        return 0

    def wait_confirmed(self, ping_seq: int, timeout: float) -> None:
        """Nothing to wait for: UDP has no acknowledgement."""

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def open_connection(
    url: str,
    tls: TlsFiles | None = None,
    *,
    client_uid: str = "detection-api-forwarder",
    confirm_timeout: float = 10.0,
) -> StreamTakConnection | UdpTakConnection:
    """A not-yet-connected connection for ``url`` (call ``connect()``; it raises TakOutage)."""
    endpoint = TakEndpoint.parse(url)
    if endpoint.scheme is Scheme.UDP:
        return UdpTakConnection(endpoint)
    return StreamTakConnection(
        endpoint,
        tls=tls,
        client_uid=client_uid,
        handshake_confirm_timeout=min(confirm_timeout, FIRST_PONG_MAX_SECONDS),
        write_timeout=confirm_timeout,
    )
