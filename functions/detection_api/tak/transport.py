"""One connection to a TAK server: send CoT events, and know when the server has processed them.

A successful ``sendall`` proves nothing. How a batch is confirmed depends on the server
(``TAK_CONFIRM``, see ``confirm.py``): by the pong that answers the ping written after it
(TAK Server, taky), by reading the events back on a second connection of our own (any server that
relays events between clients: FreeTAKServer, OpenTAKServer, taky), or not at all (``none``, and
UDP, which is best effort and says so). ``auto`` probes the server on every connect.

Every connection starts with the forwarder's presence event (``presence.py``): FreeTAKServer
takes the first event of a connection as the client's identity. The wire itself (whole-event
writes, the bounded incremental reader) is ``stream.py``, where to connect and TLS ``endpoint.py``,
failures ``errors.py``. This module holds the stream connection and its pong confirmation;
read-back confirmation is ``readback.py``, UDP ``udp.py``, the interface the forwarder uses
``connection.py``. Their public names are re-exported here: ``detection_api.tak.transport`` is the
TAK client's one import.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from detection_api.cot import PONG_TYPE, build_ping
from detection_api.tak.confirm import ConfirmMode, ReadbackLedger
from detection_api.tak.connection import TakConnection
from detection_api.tak.endpoint import Scheme, TakEndpoint, TlsFiles, build_ssl_context
from detection_api.tak.errors import (
    REJECTION_KINDS,
    OutageKind,
    TakConfirmTimeout,
    TakError,
    TakOutage,
)
from detection_api.tak.presence import PRESENCE_REFRESH_SECONDS, Presence
from detection_api.tak.readback import (
    READBACK_IDENTIFY_AFTER_SECONDS,
    READBACK_PROBE_EVERY_SECONDS,
    READBACK_PROBE_SECONDS,
    READBACK_WINDOW_BYTES,
    ReadbackConfirmation,
    event_uid,
)
from detection_api.tak.stream import (
    CONNECT_TIMEOUT_SECONDS,
    FIRST_PONG_MAX_SECONDS,
    FIRST_PONG_STREAMING_MAX_SECONDS,
    MAX_UDP_EVENT_BYTES,
    MAX_UNFINISHED_EVENT_BYTES,
    TLS_RECORD_BYTES,
    CotSocket,
    CotStreamReader,
    SeenEvent,
)
from detection_api.tak.udp import UdpTakConnection

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "FIRST_PONG_MAX_SECONDS",
    "FIRST_PONG_STREAMING_MAX_SECONDS",
    "MAX_UDP_EVENT_BYTES",
    "MAX_UNFINISHED_EVENT_BYTES",
    "READBACK_IDENTIFY_AFTER_SECONDS",
    "READBACK_PROBE_EVERY_SECONDS",
    "READBACK_PROBE_SECONDS",
    "READBACK_WINDOW_BYTES",
    "TLS_RECORD_BYTES",
    "ConfirmMode",
    "CotStreamReader",
    "OutageKind",
    "Scheme",
    "StreamTakConnection",
    "TakConfirmTimeout",
    "TakConnection",
    "TakEndpoint",
    "TakError",
    "TakOutage",
    "TlsFiles",
    "UdpTakConnection",
    "build_ssl_context",
    "event_uid",
    "open_connection",
]

log = logging.getLogger(__name__)

DEFAULT_PRESENCE = Presence("detection-api.forwarder", "detection-api")
# After the presence, the first thing on a connection: wait this long (or until the server says
# something) before writing anything else, so the presence is read alone (FreeTAKServer).
PRESENCE_SETTLE_SECONDS = 0.5


class StreamTakConnection(ReadbackConfirmation):
    """TCP or TLS: the forwarder's events on one socket, confirmed as ``TAK_CONFIRM`` says."""

    def __init__(
        self,
        endpoint: TakEndpoint,
        *,
        tls: TlsFiles | None = None,
        client_uid: str | None = None,
        presence: Presence | None = None,
        confirm: ConfirmMode = ConfirmMode.AUTO,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        handshake_confirm_timeout: float = FIRST_PONG_MAX_SECONDS,
        write_timeout: float = 10.0,
        readback_probe_seconds: float = READBACK_PROBE_SECONDS,
        max_unfinished: int = MAX_UNFINISHED_EVENT_BYTES,
        window_timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self._window_timeout = window_timeout  # readback: one window must come back within it
        self._tls = tls or TlsFiles()
        self._server_name = self._tls.server_name or endpoint.host
        if presence is None:
            presence = DEFAULT_PRESENCE if client_uid is None else Presence(client_uid, client_uid)
        self.presence = presence
        self.readback_presence = presence.derived("-readback", " read-back")
        self._ping_uid = f"{presence.uid}-ping"
        self.requested_mode = ConfirmMode(confirm)
        self._mode = self.requested_mode
        # auto: how this server has confirmed before (None until it has). A server that has
        # confirmed does not lose the feature between connections: a probe that fails later is
        # an outage, retried, not a silent switch to unconfirmed delivery.
        self._confirmed_by: ConfirmMode | None = None
        self._connect_timeout = connect_timeout
        self._handshake_confirm_timeout = handshake_confirm_timeout
        self._write_timeout = write_timeout
        self._readback_probe_seconds = readback_probe_seconds
        self._max_unfinished = max_unfinished
        self._main: CotSocket | None = None
        self._readback: CotSocket | None = None
        self._ledger = ReadbackLedger()
        self._unconfirmed: dict[str, int] = {}  # readback: nonce -> bytes written, not yet back
        self._seq = 0
        self._pings_sent = 0
        self._pongs_received = 0
        self._last_presence = 0.0
        self.routed_events_skipped = 0  # other clients' events (and echoes of ours) we read
        self.unsolicited_pongs = 0  # pongs with no ping of ours outstanding: ignored
        self._oversized_closed = 0

    # --- state --------------------------------------------------------------------------------

    @property
    def mode(self) -> ConfirmMode:
        """The mode in use (the requested one while a connect probes the server)."""
        return self._mode

    @property
    def confirms(self) -> bool:
        return self._mode is not ConfirmMode.NONE

    @property
    def connected(self) -> bool:
        return self._main is not None and self._main.open

    def counters(self) -> dict[str, int]:
        oversized = self._oversized_closed + sum(
            s.oversized_events for s in (self._main, self._readback) if s is not None
        )
        return {
            "unsolicited_pongs": self.unsolicited_pongs,
            "oversized_events": oversized,
            "readback_unmatched": self._ledger.unmatched,
        }

    def _new_socket(self) -> CotSocket:
        # The context is built on every connect: certificates rotated on disk are picked up.
        context = build_ssl_context(self._tls) if self.endpoint.scheme is Scheme.TLS else None
        return CotSocket(
            self.endpoint,
            context,
            self._server_name,
            connect_timeout=self._connect_timeout,
            write_timeout=self._write_timeout,
            max_unfinished=self._max_unfinished,
        )

    # --- connect and probe --------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, announce the forwarder, and settle how batches will be confirmed.

        With TLS 1.3 a server that rejects our client certificate says so only on our next read:
        every mode reads something from the server before the connection counts as up.
        """
        self.close()
        # Probing is in the requested mode: a reconnect must not wait for the handshake's pong
        # as the last connection's pong mode did (its timeout closes the socket the read-back
        # probe needs).
        self._mode = self.requested_mode
        self._seq = self._pings_sent = self._pongs_received = 0
        self._ledger.reset()
        self._unconfirmed.clear()
        main = self._new_socket()
        main.connect()
        self._main = main
        try:
            self._write_presence(main, self.presence)
            # The presence must arrive alone: FreeTAKServer parses the first read of a
            # connection as the client's identity and drops the client if more follows in it.
            self._drain(main, PRESENCE_SETTLE_SECONDS)
            self._mode = self._settle_mode()
        except TakConfirmTimeout as exc:
            self._abort()
            raise TakOutage(
                OutageKind.NO_PONG,
                f"{self.endpoint} accepted the connection but never answered a ping "
                "(an input-only port? TAK Server needs its streaming port, e.g. 8089; "
                "servers that never answer pings need TAK_CONFIRM=readback or auto)",
            ) from exc
        except TakOutage as exc:
            self._abort()
            raise self._explain_rejection(exc) from exc

    def _explain_rejection(self, exc: TakOutage) -> TakOutage:
        if self.endpoint.scheme is not Scheme.TLS:
            return exc
        has_identity = bool(self._tls.cert or self._tls.p12)
        if not has_identity and exc.kind in REJECTION_KINDS:
            return TakOutage(
                OutageKind.TLS_CLIENT_CERT,
                f"{self.endpoint} refused the connection during TLS set-up: no client "
                "certificate is configured (TAK_TLS_CERT and TAK_TLS_KEY, or TAK_TLS_P12)",
            )
        if exc.kind is OutageKind.CLOSED:
            # A TLS server that hangs up before answering anything has, in practice, refused
            # our client certificate.
            return TakOutage(
                OutageKind.TLS_CLIENT_CERT,
                f"{self.endpoint} closed the connection during TLS set-up; it probably "
                "rejected our client certificate (is TAK_TLS_CERT issued by its CA?)",
            )
        return exc

    def _settle_mode(self) -> ConfirmMode:
        """The mode this connection confirms by; with ``auto``, never ``none`` for a server
        that has confirmed before (the outage is named after how it confirmed)."""
        mode = self._probe_mode()
        if self.requested_mode is ConfirmMode.AUTO:
            if mode is not ConfirmMode.NONE:
                self._confirmed_by = mode
            elif self._confirmed_by is not None:
                raise TakOutage(
                    OutageKind.NO_PONG
                    if self._confirmed_by is ConfirmMode.PONG
                    else OutageKind.NO_READBACK,
                    f"{self.endpoint} answered no ping and relayed nothing back within "
                    f"{self._readback_probe_seconds:g} s, though it confirmed by "
                    f"{self._confirmed_by.value} before (TAK_CONFIRM=auto keeps confirming: "
                    "retrying the connection)",
                )
        return mode

    def _probe_mode(self) -> ConfirmMode:
        requested = self.requested_mode
        if requested in (ConfirmMode.PONG, ConfirmMode.AUTO):
            seq = self._write_ping()
            try:
                self._wait_pong(
                    seq,
                    self._handshake_confirm_timeout,
                    while_receiving=FIRST_PONG_STREAMING_MAX_SECONDS,
                )
                return ConfirmMode.PONG
            except TakConfirmTimeout:
                if requested is ConfirmMode.PONG:
                    raise
                self._pongs_received = self._pings_sent  # a late pong now counts as unsolicited
        if requested in (ConfirmMode.READBACK, ConfirmMode.AUTO):
            if self._probe_readback():
                return ConfirmMode.READBACK
            if requested is ConfirmMode.READBACK:
                raise TakOutage(
                    OutageKind.NO_READBACK,
                    f"{self.endpoint} did not relay our presence event back to our second "
                    f"connection within {self._readback_probe_seconds:g} s (TAK_CONFIRM=readback)",
                )
            return ConfirmMode.NONE
        # none: one short read, so a TLS server rejecting our certificate shows now.
        self._drain(self._require_main(), 0.3)
        return ConfirmMode.NONE

    def _write_presence(self, sock: CotSocket, presence: Presence) -> None:
        sock.write([presence.event(datetime.now(UTC))])
        if sock is self._main:
            self._last_presence = time.monotonic()

    # --- sending --------------------------------------------------------------------------------

    def send(self, events: Sequence[bytes]) -> int:
        main = self._require_main()
        out: list[bytes] = []
        if time.monotonic() - self._last_presence >= PRESENCE_REFRESH_SECONDS:
            out.append(self.presence.event(datetime.now(UTC)))  # keep the contact fresh
            self._last_presence = time.monotonic()
        self._seq += 1
        if self._mode is ConfirmMode.READBACK:
            return self._send_in_windows(main, out, events)
        out.extend(events)
        if self._mode is ConfirmMode.PONG:
            if self._pongs_received == self._pings_sent:
                self.drain()  # pongs that came before this ping are not its answer
            out.append(build_ping(self._ping_uid, datetime.now(UTC)))
            main.write(out)
            self._pings_sent += 1
            return self._pings_sent
        main.write(out)
        return self._seq

    def drain(self, max_reads: int = 64) -> None:
        """Read what the server has sent so far without waiting. Called when idle and before
        a ping: a pong read while no ping of ours is outstanding is unsolicited and confirms
        nothing; and a busy TAK network's events must not pile up unread in the server."""
        if not self.connected:
            return
        for _ in range(max_reads):
            if not self._read_any(0):
                return

    def _write_ping(self) -> int:
        self._require_main().write([build_ping(self._ping_uid, datetime.now(UTC))])
        self._pings_sent += 1
        return self._pings_sent

    # --- confirming -----------------------------------------------------------------------------

    def wait_confirmed(self, seq: int, timeout: float) -> None:
        if self._mode is ConfirmMode.PONG:
            self._wait_pong(seq, timeout)
        elif self._mode is ConfirmMode.READBACK:
            self._wait_readback(seq, timeout)

    def _wait_pong(self, ping_seq: int, timeout: float, *, while_receiving: float = 0) -> None:
        """Wait for the pong of ping ``ping_seq``. With ``while_receiving``, incoming data
        restarts the timeout, up to that many seconds in all."""
        started = time.monotonic()
        deadline = started + timeout
        hard_deadline = started + max(timeout, while_receiving)
        while self._pongs_received < ping_seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self._mode is ConfirmMode.PONG:
                    self._abort()  # a late pong would confirm the wrong batch: start afresh
                raise TakConfirmTimeout(f"no pong from {self.endpoint} within {timeout:g} s")
            if self._read_any(remaining) and while_receiving:
                deadline = min(hard_deadline, time.monotonic() + timeout)

    def _read_any(self, timeout: float) -> list[tuple[CotSocket, list[SeenEvent]]]:
        """Read whatever arrives on either socket within ``timeout``, and account for it."""
        sockets = [s for s in (self._main, self._readback) if s is not None and s.open]
        if not sockets:
            raise TakOutage(OutageKind.CLOSED, f"not connected to {self.endpoint}")
        ready = [s for s in sockets if s.buffered]
        if not ready:
            try:
                ready, _, _ = select.select(sockets, [], [], max(0.0, timeout))
            except (OSError, ValueError) as exc:
                self._abort()
                raise TakOutage(OutageKind.CLOSED, f"{self.endpoint}: {exc}") from exc
        got = []
        for sock in ready:
            seen = sock.read(0.05)
            if seen is not None:
                self._account(sock, seen)
                got.append((sock, seen))
        return got

    def _account(self, sock: CotSocket, seen: list[SeenEvent]) -> None:
        from_main = sock is self._main
        for event in seen:
            if event.type == PONG_TYPE:
                # One pong per outstanding ping of ours, on our main connection; any other pong
                # (relayed from another client, forged, late) confirms nothing.
                if from_main and self._pongs_received < self._pings_sent:
                    self._pongs_received += 1
                else:
                    self.unsolicited_pongs += 1
            elif not from_main and event.nonce is not None:
                self._ledger.seen(event.uid, event.nonce)
            else:
                self.routed_events_skipped += 1

    def _drain(self, sock: CotSocket, seconds: float) -> None:
        seen = sock.read(seconds)
        if seen:
            self._account(sock, seen)

    # --- closing --------------------------------------------------------------------------------

    def _require_main(self) -> CotSocket:
        if self._main is None or not self._main.open:
            raise TakOutage(OutageKind.CLOSED, f"not connected to {self.endpoint}")
        return self._main

    def _abort(self) -> None:
        for sock in (self._main, self._readback):
            if sock is not None:
                self._oversized_closed += sock.oversized_events
                sock.abort()
        self._main = self._readback = None

    def close(self, drain_seconds: float = 0.5) -> None:
        """Close cleanly (both connections): drain, TLS close_notify, TCP FIN."""
        for sock in (self._main, self._readback):
            if sock is not None:
                self._oversized_closed += sock.oversized_events
                sock.close(drain_seconds)
        self._main = self._readback = None


def open_connection(
    url: str,
    tls: TlsFiles | None = None,
    *,
    client_uid: str | None = None,
    presence: Presence | None = None,
    confirm: ConfirmMode | str = ConfirmMode.AUTO,
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
        presence=presence,
        confirm=ConfirmMode(confirm),
        handshake_confirm_timeout=min(confirm_timeout, FIRST_PONG_MAX_SECONDS),
        write_timeout=confirm_timeout,
        window_timeout=confirm_timeout,
    )
