"""What the forwarder needs from a connection to a TAK server (stream or UDP)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from detection_api.tak.confirm import ConfirmMode
from detection_api.tak.endpoint import TakEndpoint


class TakConnection(Protocol):
    """What the forwarder needs from a connection."""

    endpoint: TakEndpoint

    @property
    def confirms(self) -> bool:
        """False while nothing written is ever acknowledged (UDP, TAK_CONFIRM=none)."""
        ...

    @property
    def mode(self) -> ConfirmMode: ...

    @property
    def connected(self) -> bool: ...

    def connect(self) -> None: ...

    def send(self, events: Sequence[bytes]) -> int:
        """Write events (and whatever confirms them). Returns the batch's sequence number."""
        ...

    def wait_confirmed(self, seq: int, timeout: float) -> None:
        """Block until batch ``seq`` is confirmed (a no-op when nothing confirms)."""
        ...

    def counters(self) -> dict[str, int]:
        """Cumulative anomaly counts (unsolicited pongs, oversized events, ...)."""
        ...

    def drain(self) -> None:
        """Read and account for what the server sent, without waiting (raises TakOutage)."""
        ...

    def close(self) -> None: ...
