"""UDP to a TAK server: best effort, one event per datagram, nothing ever confirmed."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from detection_api.tak.confirm import ConfirmMode
from detection_api.tak.endpoint import TakEndpoint
from detection_api.tak.errors import OutageKind, TakOutage, outage_from_os_error


class UdpTakConnection:
    """Best effort: one event per datagram, nothing ever confirmed."""

    confirms = False
    mode = ConfirmMode.NONE

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
            raise outage_from_os_error(exc, f"resolving {self.endpoint}") from exc
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
            raise outage_from_os_error(exc, f"sending to {self.endpoint}") from exc
        return 0

    def wait_confirmed(self, seq: int, timeout: float) -> None:
        """Nothing to wait for: UDP has no acknowledgement."""

    def counters(self) -> dict[str, int]:
        return {}

    def drain(self) -> None:
        """Nothing comes back over UDP."""

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
