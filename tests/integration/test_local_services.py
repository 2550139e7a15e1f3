"""The local process toolkit and the fixtures built on it, against the real servers."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tak_subscriber import TakConnectionError, TakSubscriber, _DeclarationStripper, cot_event

from detection_api.local.ports import is_listening
from detection_api.local.procs import ManagedProcess, ProcessExited, wait_until


def _pid_gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (or is a zombie nobody reaped: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


# --- Redis ---------------------------------------------------------------------------------------


def test_redis_keeps_acknowledged_writes_across_sigkill(redis_server):
    client = redis_server.client()
    for i in range(2000):
        client.set(f"key:{i}", i)
    client.rpush("jobs", *[f"job-{i}" for i in range(500)])
    pid, port = redis_server.pid, redis_server.port

    redis_server.kill()  # SIGKILL right after the last acknowledged write
    assert _pid_gone(pid)
    assert not is_listening(port)

    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.pid != pid
    client = redis_server.client()
    assert client.dbsize() == 2001
    assert client.get("key:1999") == b"1999"
    assert client.llen("jobs") == 500
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    # One --save per pair: Redis 6.2 silently drops a quoted multi-pair value.
    assert client.config_get("save")["save"] == "3600 1 300 100 60 10000"


def test_redis_stop_ends_the_process_and_frees_the_port(redis_server):
    pid, port = redis_server.pid, redis_server.port
    redis_server.stop()
    assert _pid_gone(pid)
    assert not is_listening(port)


def test_redis_with_password_refuses_anonymous_clients(redis_server_factory):
    server = redis_server_factory(password="s3cret/&")
    assert server.url.startswith("redis://:s3cret%2F%26@127.0.0.1:")
    assert server.client().ping()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as anonymous:
        anonymous.sendall(b"PING\r\n")
        assert anonymous.recv(100).startswith(b"-NOAUTH")


# --- taky ----------------------------------------------------------------------------------------


def test_taky_over_mutual_tls_routes_an_event_to_the_subscriber(
    taky_tls, tak_subscriber, tak_subscriber_factory
):
    assert taky_tls.url == f"tls://127.0.0.1:{taky_tls.port}"
    sender = tak_subscriber_factory(taky_tls, client="forwarder")
    sender.send(cot_event("route-1", lat=48.1234567, lon=11.7654321, hae=512.5, ce=4.2, le=7.5))

    (event,) = tak_subscriber.wait_for_uids(["route-1"], timeout=10)
    assert (event.type, event.how) == ("a-u-G", "m-i")
    # taky parses and re-serialises events: lat/lon with 6 decimals, hae/ce/le with 1.
    assert (event.lat, event.lon, event.hae) == (48.123457, 11.765432, 512.5)
    assert (event.ce, event.le) == (4.2, 7.5)
    assert b'uid="route-1"' in event.raw
    assert tak_subscriber.duplicates == 0
    assert sender.count == 0  # taky does not echo an event to its sender
    # log_cot keeps every received event, one file per sending client.
    wait_until(
        lambda: any("route-1" in f.read_text() for f in taky_tls.cot_log_dir.glob("*.cot")),
        10,
        what="the event in taky's CoT log",
    )


def test_taky_client_env_names_the_tls_files(taky_tls, pki):
    env = taky_tls.client_env()
    assert env == {
        "TAK_URL": taky_tls.url,
        "TAK_TLS_CA": str(pki.ca.cert),
        "TAK_TLS_CERT": str(pki.client("forwarder").cert),
        "TAK_TLS_KEY": str(pki.client("forwarder").key),
        "TAK_TLS_SERVER_NAME": "localhost",
    }


def test_taky_rejects_a_client_certificate_from_another_ca(taky_tls, tak_subscriber, pki):
    intruder = TakSubscriber(
        taky_tls.url,
        ca=pki.ca.cert,
        cert=pki.wrong_ca_client.cert,
        key=pki.wrong_ca_client.key,
    )
    # TLS 1.3 finishes the client's side of the handshake first: the rejection shows on the
    # first read, so connect() (which waits for a pong) is what must fail.
    with pytest.raises(TakConnectionError, match=r"(?i)unknown ca|closed|reset|alert"):
        intruder.connect(timeout=5)
    with pytest.raises(TakConnectionError):
        intruder.send(cot_event("intruder-1"))
    tak_subscriber.ping()  # a full round trip after the attempt: nothing was routed
    assert tak_subscriber.count == 0


def test_taky_rejects_a_client_without_certificate(taky_tls, pki):
    anonymous = TakSubscriber(taky_tls.url, ca=pki.ca.cert)
    with pytest.raises(TakConnectionError):
        anonymous.connect(timeout=5)


def test_client_refuses_a_server_certificate_for_another_host(taky_factory, pki):
    impostor = taky_factory(tls=True, server_cert=pki.wrong_host_server)
    client = pki.client("subscriber")
    subscriber = TakSubscriber(impostor.url, ca=pki.ca.cert, cert=client.cert, key=client.key)
    with pytest.raises(TakConnectionError, match=r"(?i)hostname|certificate verify failed"):
        subscriber.connect(timeout=5)


def test_taky_plain_tcp_mode_routes_events(taky_tcp, tak_subscriber_factory):
    assert taky_tcp.url == f"tcp://127.0.0.1:{taky_tcp.port}"
    assert taky_tcp.client_env() == {"TAK_URL": taky_tcp.url}
    receiver = tak_subscriber_factory(taky_tcp)
    sender = tak_subscriber_factory(taky_tcp)
    uids = [f"tcp-{i}" for i in range(50)]
    sender.send(b"".join(cot_event(uid) for uid in uids))
    receiver.wait_for_uids(uids, timeout=10)
    assert receiver.count == 50
    assert receiver.duplicates == 0


def test_a_ping_gets_a_pong_and_is_not_routed(taky_tls, tak_subscriber, tak_subscriber_factory):
    other = tak_subscriber_factory(taky_tls, client="forwarder")
    pongs = tak_subscriber.pongs
    round_trip = tak_subscriber.ping(timeout=5)
    assert 0 < round_trip < 5
    assert tak_subscriber.pongs >= pongs + 1  # one more if a resend crossed a slow pong
    other.ping()  # other's round trip is after ours: a routed ping would be there by now
    assert other.count == 0
    assert tak_subscriber.count == 0


def test_taky_restarts_on_the_same_port(taky_tls, tak_subscriber_factory):
    port, pid = taky_tls.port, taky_tls.pid
    taky_tls.stop()
    assert _pid_gone(pid)
    assert not is_listening(port)
    taky_tls.start()
    assert (taky_tls.port, taky_tls.url) == (port, f"tls://127.0.0.1:{port}")
    receiver = tak_subscriber_factory(taky_tls)
    sender = tak_subscriber_factory(taky_tls, client="forwarder")
    sender.send(cot_event("after-restart"))
    receiver.wait_for_uids(["after-restart"], timeout=10)


def test_taky_replays_live_events_to_new_connections(taky_tls, tak_subscriber_factory):
    # Documented taky behaviour the fixtures guard against by giving every test its own taky.
    sender = tak_subscriber_factory(taky_tls, client="forwarder")
    sender.send(cot_event("persisted", stale_seconds=300))
    sender.ping()  # processed in order: the event is stored before the pong is sent
    latecomer = tak_subscriber_factory(taky_tls)
    assert "persisted" in latecomer.uids


# --- process supervision -------------------------------------------------------------------------


def test_stop_reaches_grandchildren_in_the_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    parent = ManagedProcess(
        "shell",
        ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"],
        log_path=tmp_path / "shell.log",
    ).start()
    parent.wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", 10)
    grandchild = int(pid_file.read_text())
    assert not _pid_gone(grandchild)
    parent.stop(timeout=5)
    wait_until(lambda: _pid_gone(grandchild), 5, what="the grandchild to end")
    assert _pid_gone(parent.pid)


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path):
    stubborn = ManagedProcess(
        "stubborn",
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        log_path=tmp_path / "stubborn.log",
    ).start()
    stubborn.wait_until(lambda: "ready" in stubborn.log_text(), 10)
    started = time.monotonic()
    assert stubborn.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert _pid_gone(stubborn.pid)


def test_a_swallowed_stop_signal_is_followed_by_sigterm(tmp_path):
    deaf_to_sigint = ManagedProcess(
        "deaf",
        [
            sys.executable,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7)); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        log_path=tmp_path / "deaf.log",
        stop_signal=signal.SIGINT,
    ).start()
    deaf_to_sigint.wait_until(lambda: "ready" in deaf_to_sigint.log_text(), 10)
    started = time.monotonic()
    assert deaf_to_sigint.stop(timeout=30) == 7  # SIGTERM's exit, long before the SIGKILL
    assert time.monotonic() - started < 10


def test_waiting_on_a_dead_process_fails_at_once_with_its_log(tmp_path):
    doomed = ManagedProcess(
        "doomed",
        [sys.executable, "-c", "import sys; print('bind: Address already in use'); sys.exit(3)"],
        log_path=tmp_path / "doomed.log",
    ).start()
    started = time.monotonic()
    with pytest.raises(ProcessExited) as exc_info:
        doomed.wait_until(lambda: False, timeout=30)
    assert time.monotonic() - started < 10
    assert exc_info.value.returncode == 3
    assert exc_info.value.address_in_use
    assert "Address already in use" in str(exc_info.value)
    doomed.stop()


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from detection_api.local.procs import ManagedProcess, install_signal_safety_net

    how = sys.argv[2]
    children = []

    def start_child():
        child = ManagedProcess("sleeper", ["sleep", "60"], log_path=Path(sys.argv[1]))
        children.append(child.start())

    if how == "sigkill":
        start_child()  # from the main thread: PR_SET_PDEATHSIG is armed
    else:
        # From another thread PDEATHSIG is not armed, so only the hook under test can help.
        thread = threading.Thread(target=start_child)
        thread.start()
        thread.join()
    if how == "sigterm":
        install_signal_safety_net()
    print(children[0].pid, flush=True)
    if how == "exit":
        sys.exit(0)  # without stopping the child: the atexit hook must
    sys.stdin.read()  # wait for SIGTERM (the signal safety net) or SIGKILL (PDEATHSIG)
    """
)


@pytest.mark.parametrize("how_the_parent_ends", ["exit", "sigterm", "sigkill"])
def test_children_do_not_outlive_their_parent(tmp_path, how_the_parent_ends):
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path / "sleeper.log"), how_the_parent_ends],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child_pid = None
    try:
        child_pid = int(parent.stdout.readline())
        if how_the_parent_ends != "exit":
            assert not _pid_gone(child_pid)
            parent.send_signal(getattr(signal, how_the_parent_ends.upper()))
        parent.wait(timeout=10)
        wait_until(lambda: _pid_gone(child_pid), 10, what="the orphaned child to end")
    finally:
        parent.kill()
        parent.wait()
        if child_pid is not None and not _pid_gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)


# --- the subscriber's stream handling ---------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_declaration_stripper_handles_any_split_of_the_stream(cuts):
    events = [cot_event(f"uid-{i}") for i in range(3)]
    stream = b"".join(b'<?xml version="1.0" encoding="UTF-8"?>\n' + e for e in events)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    stripper = _DeclarationStripper()
    out = b"".join(stripper.feed(stream[a:b]) for a, b in itertools.pairwise(bounds))
    assert out == b"".join(b"\n" + e for e in events)
