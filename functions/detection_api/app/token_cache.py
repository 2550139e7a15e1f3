"""Verified bearer tokens, remembered until they expire (at most ``max_age`` seconds).

A producer sends the same token with every request, and checking its signature and claims
(PyJWT) cost a third of a single REST request's own CPU time. A token is remembered only after it
verified, under its exact text (signature included), and only until the earlier of its ``exp``
and ``max_age`` from now; nothing is remembered about a token that failed, so every failure is
still counted and rate limited. Keys are loaded once at start and there is no revocation list,
so an entry answers exactly what verifying again would, until it lapses. Framework-free; the
tokens are kept in memory only (never logged, never in a repr).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import jwt

from detection_api.auth import Principal

MAX_ENTRIES = 4096
MAX_AGE_SECONDS = 60.0


class VerifiedTokens:
    def __init__(
        self,
        verify: Callable[[str], Principal],
        *,
        max_entries: int = MAX_ENTRIES,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verify = verify
        self._max_entries = max_entries
        self._max_age = max_age
        self._clock = clock
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VerifiedTokens({len(self._entries)} remembered)"

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str) -> Principal:
        """The token's principal; raises what the verifier raises (``AuthError``)."""
        now = self._clock()
        entry = self._entries.get(token)
        if entry is not None and now < entry[1]:
            return entry[0]
        principal = self._verify(token)  # raises for a bad token: nothing is remembered
        until = min(_expiry(token), now + self._max_age)
        with self._lock:
            if entry is not None or len(self._entries) >= self._max_entries:
                self._drop_lapsed(now)
            if len(self._entries) < self._max_entries:
                self._entries[token] = (principal, until)
        return principal

    def _drop_lapsed(self, now: float) -> None:
        lapsed = [token for token, (_, until) in self._entries.items() if until <= now]
        for token in lapsed:
            del self._entries[token]
        if len(self._entries) >= self._max_entries:  # all live: forget the oldest half
            for token in list(self._entries)[: self._max_entries // 2]:
                del self._entries[token]


def _expiry(token: str) -> float:
    """``exp`` of a token that has just verified (so it is there and numeric)."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else 0.0
