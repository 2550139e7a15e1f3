"""The wire under a TAK connection: one TCP/TLS socket that writes whole events and reads through
``reader.py``. Where to connect and the TLS files are ``endpoint.py``, failures ``errors.py``.

Nothing here knows about confirmation modes (see ``transport.py`` and ``confirm.py``), Redis or
rq. Every failure to reach or talk to the server is a :class:`TakOutage` whose ``kind`` says what
went wrong; a live connection that does not answer in time raises :class:`TakConfirmTimeout`.

Two rules keep the stream parseable by the strictest server (FreeTAKServer drops a whole read, and
the client, when the read ends inside an event or a UTF-8 character; OpenTAKServer loses an event
that shares a write with part of the next): every write holds whole events only, and a TLS record
never holds part of an event unless that one event is larger than a record.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Iterator, Sequence

from detection_api.tak.endpoint import TakEndpoint
from detection_api.tak.errors import (
    OutageKind,
    TakConfirmTimeout,
    TakOutage,
    outage_from_os_error,
)
from detection_api.tak.reader import (
    MAX_UNFINISHED_EVENT_BYTES,
    CotStreamReader,
    SeenEvent,
    StreamTooLarge,
)

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
