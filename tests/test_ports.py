"""Free loopback ports: distinct, bindable, and never one that something listens on."""

from __future__ import annotations

import socket

import pytest

from detection_api.local.ports import (
    LOOPBACK,
    free_port,
    free_ports,
    has_listener,
    is_listening,
    listening_ports,
)


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(20)
    assert len(set(ports)) == 20
    sockets = []
    try:
        for port in ports:
            sock = socket.socket()
            sock.bind((LOOPBACK, port))  # would raise EADDRINUSE if the pick were taken
            sockets.append(sock)
    finally:
        for sock in sockets:
            sock.close()


def test_is_listening_sees_a_listener_and_its_absence():
    with socket.socket() as server:
        server.bind((LOOPBACK, 0))
        server.listen()
        port = server.getsockname()[1]
        assert is_listening(port)
    assert not is_listening(port)


def test_free_ports_never_returns_a_listening_port():
    listeners = []
    try:
        for _ in range(20):
            server = socket.socket()
            server.bind((LOOPBACK, 0))
            server.listen()
            listeners.append(server)
        busy = {s.getsockname()[1] for s in listeners}
        picked = free_ports(200)
        assert busy.isdisjoint(picked)
        assert not any(is_listening(p) for p in picked[:20])
    finally:
        for server in listeners:
            server.close()


def test_free_port_is_a_valid_port():
    assert 1024 < free_port() < 65536


def test_free_ports_rejects_a_non_positive_count():
    with pytest.raises(ValueError, match="at least 1"):
        free_ports(0)


def test_listening_ports_reads_the_kernel_table():
    with socket.socket() as server:
        server.bind((LOOPBACK, 0))
        port = server.getsockname()[1]
        assert not has_listener(port)  # bound is not listening
        server.listen()
        ports = listening_ports()
        assert ports is not None and port in ports
        assert has_listener(port)
    assert not has_listener(port)
