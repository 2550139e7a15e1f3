"""Read-back confirmation (``TAK_CONFIRM=readback``) for the stream connection of transport.py.

For servers that never answer a ping (FreeTAKServer, OpenTAKServer): every event carries a fresh
nonce, and a second connection of the forwarder confirms an event when the server relays it back
with its uid and that nonce (README "Delivery: durable, confirmed, at least once"). Writes are a
sliding window of bytes written and not yet read back. These methods are part of
``StreamTakConnection``, which provides the sockets, the reads and the clean-up they use.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from xml.sax.saxutils import unescape  # nosec B406 # unescapes a uid we wrote; parses nothing

from detection_api.tak.confirm import ReadbackLedger, new_nonce, stamp_nonce
from detection_api.tak.endpoint import Scheme, TakEndpoint
from detection_api.tak.errors import TakConfirmTimeout
from detection_api.tak.presence import Presence
from detection_api.tak.stream import CotSocket, SeenEvent

# auto/readback: how long the forwarder's own presence may take to come back on the read-back
# connection, how often it is re-sent meanwhile, and when the read-back connection announces
# itself (FreeTAKServer routes only to identified clients; OpenTAKServer ignores for the whole
# session a client that sends before its broker channel is up, ~2 s after connecting).
READBACK_PROBE_SECONDS = 10.0
READBACK_PROBE_EVERY_SECONDS = 1.0
READBACK_IDENTIFY_AFTER_SECONDS = 2.5
# readback: bytes written and not yet relayed back, at most (a sliding window). Over plain TCP
# OpenTAKServer parses each 64 KiB read alone and drops the event a read ends in, so more than
# 64 KiB waiting in its socket loses an event on every read, and again on every resend. Over TLS
# a read ends with a record of whole events: the window there only keeps the pipe bounded.
READBACK_WINDOW_BYTES = {Scheme.TCP: 48 * 1024, Scheme.TLS: 512 * 1024}
_UID = re.compile(rb"<event\b[^>]*?\suid=\"([^\"]*)\"")


def event_uid(event: bytes) -> str:
    """The uid attribute of a serialised event (as a parser would report it)."""
    match = _UID.search(event)
    if match is None:
        raise ValueError("a CoT event without a uid")
    return unescape(match.group(1).decode(), {"&quot;": '"'})


class ReadbackConfirmation:
    """The read-back half of ``StreamTakConnection`` (a mixin: it shares that class's state)."""

    endpoint: TakEndpoint
    presence: Presence
    readback_presence: Presence
    _main: CotSocket | None
    _readback: CotSocket | None
    _ledger: ReadbackLedger
    _unconfirmed: dict[str, int]  # nonce -> bytes written, not yet read back
    _seq: int
    _readback_probe_seconds: float
    _window_timeout: float

    if TYPE_CHECKING:  # provided by StreamTakConnection

        def _new_socket(self) -> CotSocket: ...
        def _require_main(self) -> CotSocket: ...
        def _write_presence(self, sock: CotSocket, presence: Presence) -> None: ...
        def _read_any(self, timeout: float) -> list[tuple[CotSocket, list[SeenEvent]]]: ...
        def _abort(self) -> None: ...

    def _probe_readback(self) -> bool:
        """Open the read-back connection and wait for our own presence event to come back.

        Two tries, half the probe time each: first the read-back connection announces itself at
        once (FreeTAKServer routes only to identified clients, and over TLS a client that stays
        silent holds up its accept loop); then a fresh one that waits
        ``READBACK_IDENTIFY_AFTER_SECONDS`` first (OpenTAKServer ignores, for the whole session,
        a client that sends before its broker channel is up)."""
        budget = self._readback_probe_seconds / 2
        return self._probe_readback_once(0.0, budget) or self._probe_readback_once(
            READBACK_IDENTIFY_AFTER_SECONDS, budget
        )

    def _probe_readback_once(self, identify_after: float, budget: float) -> bool:
        readback = self._new_socket()
        readback.connect()
        self._readback = readback
        started = time.monotonic()
        identified = False
        nonces: set[str] = set()
        next_probe = started
        while (now := time.monotonic()) < started + budget:
            if not identified and now - started >= identify_after:
                self._write_presence(readback, self.readback_presence)
                identified = True
            if now >= next_probe:
                nonce = new_nonce()
                nonces.add(nonce)
                probe = stamp_nonce(self.presence.event(datetime.now(UTC)), nonce)
                self._require_main().write([probe])
                next_probe = now + READBACK_PROBE_EVERY_SECONDS
            for sock, seen in self._read_any(min(0.2, max(0.0, next_probe - now))):
                if sock is readback and any(
                    e.uid == self.presence.uid and e.nonce in nonces for e in seen
                ):
                    if not identified:  # a proper client announces itself all the same
                        self._write_presence(readback, self.readback_presence)
                    return True
        readback.close(drain_seconds=0.1)
        self._readback = None
        return False

    def _send_in_windows(self, main: CotSocket, out: list[bytes], events: Sequence[bytes]) -> int:
        """Write ``events`` stamped with fresh nonces, never more than ``READBACK_WINDOW_BYTES``
        of them written and not yet read back (a sliding window: a write waits only for the
        room it needs). Returns the sequence number of the last write."""
        self._seq -= 1  # each write takes its own number below
        chunk: list[bytes] = list(out)  # the presence refresh, if any, goes with the first
        items: list[tuple[str, str]] = []
        sizes: list[int] = []
        for event in events:
            nonce = new_nonce()
            stamped = stamp_nonce(event, nonce)
            if sum(sizes) + len(stamped) > self._window_room():
                if chunk:
                    self._write_stamped(main, chunk, items, sizes)
                    chunk, items, sizes = [], [], []
                self._wait_for_room(len(stamped))
            chunk.append(stamped)
            items.append((event_uid(event), nonce))
            sizes.append(len(stamped))
        if chunk:
            self._write_stamped(main, chunk, items, sizes)
        return self._seq

    def _write_stamped(
        self, main: CotSocket, chunk: list[bytes], items: list[tuple[str, str]], sizes: list[int]
    ) -> None:
        self._seq += 1
        self._ledger.expect(self._seq, items)
        for (_, nonce), size in zip(items, sizes, strict=True):
            self._unconfirmed[nonce] = size
        main.write(chunk)

    def _unconfirmed_bytes(self) -> int:
        for nonce in [n for n in self._unconfirmed if not self._ledger.waiting(n)]:
            del self._unconfirmed[nonce]
        return sum(self._unconfirmed.values())

    def _window_room(self) -> int:
        return READBACK_WINDOW_BYTES[self.endpoint.scheme] - self._unconfirmed_bytes()

    def _wait_for_room(self, needed: int) -> None:
        """Read until ``needed`` bytes fit in the window (or nothing is unconfirmed)."""
        self._read_back_until(
            lambda: not self._unconfirmed_bytes() or self._window_room() >= needed,
            self._window_timeout,
        )

    def _wait_readback(self, seq: int, timeout: float) -> None:
        """Read until every event of write ``seq`` has come back; a stalled server costs the
        batch an attempt."""
        self._read_back_until(lambda: self._ledger.done(seq), timeout)

    def _read_back_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Read until ``done()``. The timeout runs from the last event read back: a slow server
        that keeps relaying is not stuck; one that stops gets the connection aborted and
        ``TakConfirmTimeout``."""
        deadline = time.monotonic() + timeout
        waiting = self._ledger.outstanding()
        while not done():
            if self._ledger.outstanding() < waiting:
                waiting = self._ledger.outstanding()
                deadline = time.monotonic() + timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = self._ledger.outstanding()
                self._abort()
                raise TakConfirmTimeout(
                    f"{missing} event(s) not relayed back by {self.endpoint} within {timeout:g} s"
                )
            self._read_any(remaining)
