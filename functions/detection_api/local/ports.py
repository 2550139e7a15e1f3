"""Free loopback TCP ports for local servers, and "is something listening there?" checks.

A port picked here is free at the moment it is returned; another process may still take it before
our server binds it. Callers that start a server on a picked port therefore retry with a new pick
when the server reports the address is in use (see ``procs.start_with_port_retry``).
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
_PROC_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_TCP_LISTEN_STATE = "0A"


def is_listening(port: int, host: str = LOOPBACK, timeout: float = 0.25) -> bool:
    """True if a TCP connection to host:port is accepted right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports that nothing is bound to or listening on at the moment.

    All sockets stay bound until every port is picked, so the kernel cannot hand out one port twice.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        attempts = 0
        while len(ports) < count:
            attempts += 1
            if attempts > count * 20:
                raise RuntimeError(f"could not find {count} free ports on {host}")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            # The kernel gave us an unbound port; a connect proves no other listener answers on it
            # (belt and braces against unusual socket options on someone else's server).
            if port in ports or is_listening(port, host, timeout=0.1):
                continue
            ports.append(port)
        return ports
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()


def free_port(host: str = LOOPBACK) -> int:
    """One free TCP port on ``host``."""
    return free_ports(1, host)[0]


def listening_ports() -> set[int] | None:
    """Ports with a listening TCP socket in this network namespace (Linux), None if unknown."""
    ports: set[int] = set()
    readable = False
    for table in _PROC_TCP_TABLES:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            fields = row.split()  # sl local_address rem_address st ...
            if len(fields) > 3 and fields[3] == _TCP_LISTEN_STATE:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if readable else None


def has_listener(port: int) -> bool:
    """Like :func:`is_listening`, without connecting where the kernel's table can be read.

    A readiness probe that connects and hangs up shows in a TLS server's log as a failed handshake;
    reading /proc/net/tcp leaves the server alone.
    """
    ports = listening_ports()
    return port in ports if ports is not None else is_listening(port)
