"""How the forwarder learns that a TAK server processed its events (``TAK_CONFIRM``).

Streaming TAK has no acknowledgement built for this, and servers differ (measured, 2026-12):
TAK Server and taky answer a ping (``t-x-c-t``) with a pong (``t-x-c-t-r``); FreeTAKServer and
OpenTAKServer never do. Every server that relays events between clients can be checked another
way: read the event back on a second connection. So there are four modes:

``pong``
    One ping after each batch; its pong proves the server read everything before it. A pong counts
    only while a ping of ours is outstanding on that connection, one pong per ping: anything else
    (a pong relayed from another client, a forged ``t-x-c-t-r``) is ignored and counted.
``readback``
    Every event carries a per-delivery nonce in ``<detail><__delivery nonce="…"/>``; a second
    connection of the forwarder (its own uid, the same credentials) confirms an event when the
    server relays it back with that uid and nonce. A replayed or forged old copy has an old nonce
    and confirms nothing.
``none``
    Written, never confirmed (what UDP is): records end ``sent``.
``auto`` (default)
    Probed on every connect: a ping; without a pong, a read-back of the forwarder's own presence
    event; without that either, ``none`` with a warning. The strongest mode the server supports
    wins. A server lacking a feature never holds back or dead-letters a detection.

This module is pure (no sockets): the modes, the nonce stamp and the read-back bookkeeping.
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

NONCE_ELEMENT = "__delivery"
_NONCE_BYTES = 8  # 64 random bits per delivery: never guessed, never repeated in practice


class ConfirmMode(StrEnum):
    AUTO = "auto"
    PONG = "pong"
    READBACK = "readback"
    NONE = "none"


CONFIRM_MODES = tuple(m.value for m in ConfirmMode)
# What a connection can end up using (auto is resolved at connect).
RESOLVED_MODES = (ConfirmMode.PONG, ConfirmMode.READBACK, ConfirmMode.NONE)


def new_nonce() -> str:
    return secrets.token_hex(_NONCE_BYTES)


_DETAIL_END = b"</detail>"
_EMPTY_DETAIL = re.compile(rb"<detail\s*/>")
_EVENT_END = b"</event>"


def stamp_nonce(event: bytes, nonce: str) -> bytes:
    """``event`` with ``<__delivery nonce="…"/>`` as the last child of its ``<detail>``.

    The nonce is hexadecimal (nothing to escape), so the event stays well-formed and the bytes
    before it are untouched. An event without ``<detail>`` gains one.
    """
    stamp = f'<{NONCE_ELEMENT} nonce="{nonce}"/>'.encode()
    end = event.rfind(_DETAIL_END)
    if end >= 0:
        return event[:end] + stamp + event[end:]
    empties = list(_EMPTY_DETAIL.finditer(event))
    if empties:
        empty = empties[-1]
        return event[: empty.start()] + b"<detail>" + stamp + b"</detail>" + event[empty.end() :]
    end = event.rfind(_EVENT_END)
    if end < 0:
        raise ValueError("not a CoT event: no </event>")
    return event[:end] + b"<detail>" + stamp + b"</detail>" + event[end:]


@dataclass
class _Batch:
    seq: int
    waiting: set[tuple[str, str]] = field(default_factory=set)  # (uid, nonce)


class ReadbackLedger:
    """Which written events the server has relayed back, batch by batch (in write order).

    ``expect(seq, [(uid, nonce), ...])`` after writing a batch; ``seen(uid, nonce)`` for every
    event the read-back connection receives; ``done(seq)`` once all of that batch came back.
    Copies that match nothing outstanding (echoes, replays, forgeries, duplicates) are counted
    in ``unmatched`` and change nothing.
    """

    def __init__(self) -> None:
        self._batches: deque[_Batch] = deque()
        self._by_nonce: dict[str, tuple[str, _Batch]] = {}
        self.confirmed_through = 0  # every batch up to this seq has come back
        self.unmatched = 0

    def expect(self, seq: int, items: list[tuple[str, str]]) -> None:
        batch = _Batch(seq, set(items))
        self._batches.append(batch)
        for uid, nonce in items:
            self._by_nonce[nonce] = (uid, batch)
        self._advance()

    def seen(self, uid: str, nonce: str | None) -> bool:
        entry = self._by_nonce.get(nonce) if nonce else None
        if entry is None or entry[0] != uid:
            self.unmatched += 1
            return False
        del self._by_nonce[nonce]  # type: ignore[arg-type]  # nonce is not None here
        entry[1].waiting.discard((uid, nonce))  # type: ignore[arg-type]
        self._advance()
        return True

    def done(self, seq: int) -> bool:
        return self.confirmed_through >= seq

    def outstanding(self) -> int:
        return len(self._by_nonce)

    def waiting(self, nonce: str) -> bool:
        """Whether the event stamped ``nonce`` is written and not yet read back."""
        return nonce in self._by_nonce

    def reset(self) -> None:
        """A new connection: nothing written before can be confirmed any more."""
        self._batches.clear()
        self._by_nonce.clear()
        self.confirmed_through = 0

    def _advance(self) -> None:
        while self._batches and not self._batches[0].waiting:
            self.confirmed_through = self._batches.popleft().seq
