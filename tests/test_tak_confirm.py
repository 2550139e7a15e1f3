"""Confirmation modes (TAK_CONFIRM), the forwarder's presence, whole-event writes and the bounded
reader, against real sockets on 127.0.0.1.

``RelayServer`` behaves like the servers measured in the field notes, switch by switch: it relays
every event to the other clients (all three servers), optionally answers pings (taky, TAK Server),
echoes to the sender and swallows the first event of a connection as its identity
(FreeTAKServer). Events are split on ``</event>``, so a write that ends inside an event would
surface as a relayed fragment; the server records every read for the whole-write checks.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from detection_api.cot import PING_TYPE
from detection_api.tak.confirm import (
    ConfirmMode,
    ReadbackLedger,
    new_nonce,
    stamp_nonce,
)
from detection_api.tak.presence import PRESENCE_TYPE, Presence
from detection_api.tak.reader import CotStreamReader, StreamTooLarge
from detection_api.tak.stream import whole_event_writes
from detection_api.tak.transport import (
    OutageKind,
    StreamTakConnection,
    TakConfirmTimeout,
    TakEndpoint,
    TakOutage,
    event_uid,
)

PONG = (
    b'<event version="2.0" uid="takPong" type="t-x-c-t-r" how="h-g-i-g-o" '
    b'time="2026-01-01T00:00:00.000Z" start="2026-01-01T00:00:00.000Z" '
    b'stale="2026-01-01T00:00:20.000Z"><point lat="0" lon="0" hae="0" ce="1" le="1"/></event>'
)


def event(uid: str, remarks: str = "") -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="a-u-G" how="m-i" '
        'time="2026-01-01T00:00:00.000Z" start="2026-01-01T00:00:00.000Z" '
        'stale="2026-01-01T00:05:00.000Z"><point lat="1" lon="2" hae="0" ce="9" le="9"/>'
        f"<detail><remarks>{remarks}</remarks></detail></event>"
    ).encode()


class RelayServer:
    def __init__(
        self,
        *,
        pong: bool = False,
        echo: bool = False,
        first_event_is_identity: bool = False,
        relay: bool = True,
        read_size: int = 65536,
        identity_read_alone: bool = False,
        parse_each_read_alone: bool = False,
        seconds_per_read: float = 0.0,
    ) -> None:
        self.pong, self.echo, self.relay = pong, echo, relay
        # OpenTAKServer: every read is parsed on its own; an event split between two reads is
        # lost (its head ends one read, its tail starts the next). A slow server reads rarely,
        # so what a client wrote meanwhile is read in reads of read_size.
        self.parse_each_read_alone = parse_each_read_alone
        self.seconds_per_read = seconds_per_read
        # FreeTAKServer: the first read of a connection must hold the identity event and nothing
        # else, or the client is dropped.
        self.identity_read_alone = identity_read_alone
        self.dropped = 0
        self._first_read_done: set[socket.socket] = set()
        self.first_event_is_identity = first_event_is_identity
        self.read_size = read_size
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._clients: dict[socket.socket, bytearray] = {}
        self._identified: set[socket.socket] = set()
        self.reads: list[bytes] = []
        self.first_events: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> TakEndpoint:
        return TakEndpoint.parse(f"tcp://127.0.0.1:{self.port}")

    def start(self) -> RelayServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in list(self._clients):
            sock.close()
        self._listener.close()

    def inject(self, data: bytes) -> None:
        """Send ``data`` to every connected client (another client publishing)."""
        with self._lock:
            for sock in self._clients:
                sock.sendall(data)

    def wait_clients(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self._clients) < count:
            assert time.monotonic() < deadline, f"{len(self._clients)} of {count} clients"
            time.sleep(0.01)

    def _loop(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener, *self._clients], [], [], 0.05)
            for sock in readable:
                if sock is self._listener:
                    conn, _ = self._listener.accept()
                    with self._lock:
                        self._clients[conn] = bytearray()
                    continue
                time.sleep(self.seconds_per_read)
                try:
                    data = sock.recv(self.read_size)
                except OSError:
                    data = b""
                with self._lock:
                    if not data:
                        self._clients.pop(sock, None)
                        sock.close()
                        continue
                    self.reads.append(data)
                    if self.identity_read_alone and sock not in self._first_read_done:
                        self._first_read_done.add(sock)
                        # Like FreeTAKServer: read on until 5 ms of silence, then parse the lot.
                        while select.select([sock], [], [], 0.005)[0]:
                            more = sock.recv(self.read_size)
                            if not more:
                                break
                            data += more
                        if data.count(b"</event>") != 1 or not data.endswith(b"</event>"):
                            self.dropped += 1
                            self._clients.pop(sock, None)
                            sock.close()
                            continue
                    buffer = self._clients[sock]
                    if self.parse_each_read_alone:
                        buffer.clear()  # the tail of the previous read is lost
                        start = data.find(b"<event")
                        data = data[start:] if start >= 0 else b""
                    buffer += data
                    while (end := buffer.find(b"</event>")) >= 0:
                        whole = bytes(buffer[: end + len(b"</event>")])
                        del buffer[: end + len(b"</event>")]
                        self._route(sock, whole)

    def _route(self, sender: socket.socket, whole: bytes) -> None:
        if self.first_event_is_identity and sender not in self._identified:
            self._identified.add(sender)
            self.first_events.append(whole)
            return
        if f'type="{PING_TYPE}"'.encode() in whole and self.pong:
            sender.sendall(PONG)
            return
        if not self.relay:
            return
        for sock in self._clients:
            if sock is not sender or self.echo:
                sock.sendall(whole)


@pytest.fixture
def relay() -> Iterator[Callable[..., RelayServer]]:
    servers: list[RelayServer] = []

    def start(**kwargs: object) -> RelayServer:
        server = RelayServer(**kwargs).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def connection(server: RelayServer, mode: ConfirmMode, **kwargs: object) -> StreamTakConnection:
    kwargs.setdefault("handshake_confirm_timeout", 0.3)
    kwargs.setdefault("readback_probe_seconds", 5.0)
    return StreamTakConnection(server.endpoint, confirm=mode, **kwargs)  # type: ignore[arg-type]


# --- pure pieces ------------------------------------------------------------------------------


def test_the_nonce_goes_last_into_detail_and_the_event_stays_well_formed() -> None:
    reader = CotStreamReader()
    for raw in (event("a", "car &amp; 87%"), event("b").replace(b"<remarks></remarks>", b"")):
        stamped = stamp_nonce(raw, "00ff")
        assert stamped.startswith(raw[: raw.rfind(b"</detail>")])
        [seen] = reader.feed_events(stamped)
        assert seen.nonce == "00ff"
    no_detail = event("c").replace(b"<detail><remarks></remarks></detail>", b"")
    [seen] = reader.feed_events(stamp_nonce(no_detail, "01"))
    assert (seen.uid, seen.nonce) == ("c", "01")
    empty_detail = event("d").replace(b"<detail><remarks></remarks></detail>", b"<detail />")
    [seen] = reader.feed_events(stamp_nonce(empty_detail, "02"))
    assert (seen.uid, seen.nonce) == ("d", "02")


def test_nonces_do_not_repeat() -> None:
    assert len({new_nonce() for _ in range(10_000)}) == 10_000


def test_the_ledger_confirms_batches_in_order_and_only_by_uid_and_fresh_nonce() -> None:
    ledger = ReadbackLedger()
    ledger.expect(1, [("a", "n1"), ("b", "n2")])
    ledger.expect(2, [("a", "n3")])
    assert not ledger.seen("a", "old-nonce")  # a replayed copy
    assert not ledger.seen("b", "n1")  # a forged copy: right nonce, wrong uid
    assert not ledger.seen("a", None)  # a copy without our stamp
    assert ledger.seen("a", "n3")
    assert not ledger.done(2)  # batch 1 is still out: in order
    assert ledger.seen("a", "n1") and ledger.seen("b", "n2")
    assert ledger.done(2) and ledger.done(1)
    assert not ledger.seen("a", "n1")  # the duplicate of a confirmed copy
    assert ledger.unmatched == 4


def test_writes_hold_whole_events_only() -> None:
    events = [event(f"u{i}", "é" * (i * 37 % 300)) for i in range(200)]
    writes = list(whole_event_writes(events, 4096))
    assert b"".join(writes) == b"".join(events)
    for write in writes:
        assert write.startswith(b"<event") and write.endswith(b"</event>")
        assert len(write) <= 4096
        write.decode()  # never a split UTF-8 character
    big = event("big", "x" * 10_000)
    assert list(whole_event_writes([event("a"), big, event("b")], 4096)) == [
        event("a"),
        big,
        event("b"),
    ]


def test_the_reader_refuses_an_endless_event() -> None:
    reader = CotStreamReader(max_unfinished=100_000)
    reader.feed(b'<event version="2.0" uid="x" type="a-u-G"><detail><remarks>')
    with pytest.raises(StreamTooLarge):
        for _ in range(100):
            reader.feed(b"y" * 4096)
    # A stream of many complete events of any total size is fine.
    reader = CotStreamReader(max_unfinished=100_000)
    for i in range(2000):
        assert reader.feed(event(f"u{i}")) == ["a-u-G"]


def test_the_presence_event_is_a_contact_with_the_configured_identity() -> None:
    from datetime import UTC, datetime

    raw = Presence("gw.uid", "Gate & way", "1.2").event(datetime(2026, 1, 1, tzinfo=UTC))
    [seen] = CotStreamReader().feed_events(raw)
    assert (seen.type, seen.uid) == (PRESENCE_TYPE, "gw.uid")
    assert b'<contact callsign="Gate &amp; way"' in raw
    assert b'how="h-g-i-g-o"' in raw and b'stale="2026-01-01T00:10:00.000Z"' in raw
    assert event_uid(raw) == "gw.uid"


# --- modes against a relaying server -----------------------------------------------------------


def test_auto_picks_pong_where_the_server_answers_pings(
    relay: Callable[..., RelayServer],
) -> None:
    server = relay(pong=True)
    conn = connection(server, ConfirmMode.AUTO)
    conn.connect()
    assert conn.mode is ConfirmMode.PONG
    seq = conn.send([event("a")])
    conn.wait_confirmed(seq, 5)
    conn.close()
    # The presence event is the first thing the server read.
    assert server.reads[0].startswith(b"<event") and PRESENCE_TYPE.encode() in server.reads[0]


def test_auto_picks_readback_where_the_server_only_relays_like_freetakserver(
    relay: Callable[..., RelayServer],
) -> None:
    server = relay(pong=False, echo=True, first_event_is_identity=True)
    conn = connection(server, ConfirmMode.AUTO)
    conn.connect()
    assert conn.mode is ConfirmMode.READBACK
    # Both connections announced themselves first, each with its own uid.
    deadline = time.monotonic() + 5
    while len(server.first_events) < 2:  # the server reads on its own thread
        assert time.monotonic() < deadline, server.first_events
        time.sleep(0.01)
    assert sorted(event_uid(e) for e in server.first_events) == [
        "detection-api.forwarder",
        "detection-api.forwarder-readback",
    ]
    for n in range(3):
        seq = conn.send([event(f"det-{n}-{i}") for i in range(100)])
        conn.wait_confirmed(seq, 5)
    assert conn.confirms
    conn.close()


def test_the_presence_is_read_alone_before_anything_else(
    relay: Callable[..., RelayServer],
) -> None:
    """FreeTAKServer drops a client whose first read holds more than its identity event."""
    server = relay(pong=False, echo=True, first_event_is_identity=True, identity_read_alone=True)
    conn = connection(server, ConfirmMode.AUTO)
    conn.connect()
    assert conn.mode is ConfirmMode.READBACK
    seq = conn.send([event("after-identity")])
    conn.wait_confirmed(seq, 5)
    conn.close()
    assert server.dropped == 0


def test_readback_keeps_a_slow_server_that_parses_each_read_alone_whole(
    relay: Callable[..., RelayServer],
) -> None:
    """OpenTAKServer over TCP: 64 KiB reads parsed alone, ~20 reads/s. With a whole batch of
    300 kB written at once, an event is lost at every read boundary, and again on every resend:
    nothing would ever be confirmed. At most a window is unconfirmed, so each read is whole."""
    server = relay(pong=False, parse_each_read_alone=True, seconds_per_read=0.05)
    conn = connection(server, ConfirmMode.READBACK)
    conn.connect()
    events = [event(f"det-{i}", "x" * 900) for i in range(300)]
    assert sum(map(len, events)) > 4 * 65536
    seq = conn.send(events)
    conn.wait_confirmed(seq, 10)
    conn.close()


def test_readback_never_confirms_a_batch_the_server_did_not_relay(
    relay: Callable[..., RelayServer],
) -> None:
    server = relay(pong=False)
    conn = connection(server, ConfirmMode.READBACK)
    conn.connect()
    server.relay = False  # the server stops routing (frozen, overloaded)
    # Old copies of the same uid, with and without a nonce, do not count.
    server.inject(event("det-1") + stamp_nonce(event("det-1"), new_nonce()))
    seq = conn.send([event("det-1")])
    with pytest.raises(TakConfirmTimeout):
        conn.wait_confirmed(seq, 0.5)
    assert not conn.connected  # a late copy cannot confirm a later batch
    assert conn.counters()["readback_unmatched"] >= 1


def test_readback_mode_is_an_outage_when_nothing_comes_back(
    relay: Callable[..., RelayServer],
) -> None:
    server = relay(pong=False, relay=False)
    conn = connection(server, ConfirmMode.READBACK, readback_probe_seconds=0.5)
    with pytest.raises(TakOutage) as info:
        conn.connect()
    assert info.value.kind is OutageKind.NO_READBACK


def test_auto_falls_back_to_none_and_still_sends(relay: Callable[..., RelayServer]) -> None:
    server = relay(pong=False, relay=False)
    conn = connection(server, ConfirmMode.AUTO, readback_probe_seconds=0.5)
    conn.connect()
    assert conn.mode is ConfirmMode.NONE and not conn.confirms
    seq = conn.send([event("sent-anyway")])
    conn.wait_confirmed(seq, 0.01)  # nothing to wait for
    conn.close()
    assert any(b'uid="sent-anyway"' in r for r in server.reads)


def test_auto_never_drops_to_none_once_the_server_has_confirmed(
    relay: Callable[..., RelayServer],
) -> None:
    """A server that read back once and stalls on a reconnect (FreeTAKServer under load) is an
    outage until it reads back again: records of that stretch would otherwise end 'sent'."""
    server = relay(pong=False, echo=True, first_event_is_identity=True)
    conn = connection(server, ConfirmMode.AUTO, readback_probe_seconds=0.5)
    conn.connect()
    assert conn.mode is ConfirmMode.READBACK
    server.relay = False
    with pytest.raises(TakOutage) as info:
        conn.connect()
    assert info.value.kind is OutageKind.NO_READBACK
    assert "confirmed by readback before" in info.value.message
    assert not conn.connected
    server.relay = True
    conn.connect()
    assert conn.mode is ConfirmMode.READBACK
    seq = conn.send([event("after-the-stall")])
    conn.wait_confirmed(seq, 5)
    conn.close()


def test_auto_on_a_server_that_answered_pings_is_an_outage_named_no_pong_when_it_stops(
    relay: Callable[..., RelayServer],
) -> None:
    server = relay(pong=True)
    conn = connection(server, ConfirmMode.AUTO, readback_probe_seconds=0.5)
    conn.connect()
    assert conn.mode is ConfirmMode.PONG
    server.pong, server.relay = False, False
    with pytest.raises(TakOutage) as info:
        conn.connect()
    assert info.value.kind is OutageKind.NO_PONG
    assert "confirmed by pong before" in info.value.message
    server.pong = True
    conn.connect()
    assert conn.mode is ConfirmMode.PONG
    conn.close()


def test_auto_reconnecting_to_a_server_that_stopped_answering_pings_finds_readback(
    relay: Callable[..., RelayServer],
) -> None:
    """The handshake's ping on a reconnect is a probe, whatever the last connection used: its
    timeout must leave the socket open for the read-back probe (it closed it, an outage)."""
    server = relay(pong=True)
    conn = connection(server, ConfirmMode.AUTO)
    conn.connect()
    assert conn.mode is ConfirmMode.PONG
    server.pong = False  # e.g. replaced by a server that only relays
    conn.connect()
    assert conn.mode is ConfirmMode.READBACK
    seq = conn.send([event("relayed-after-the-switch")])
    conn.wait_confirmed(seq, 5)
    conn.close()


def test_auto_that_never_confirmed_keeps_probing_on_every_connect(
    relay: Callable[..., RelayServer],
) -> None:
    server = relay(pong=False, relay=False)
    conn = connection(server, ConfirmMode.AUTO, readback_probe_seconds=0.5)
    conn.connect()
    assert conn.mode is ConfirmMode.NONE
    server.relay = True
    conn.connect()
    assert conn.mode is ConfirmMode.READBACK
    conn.close()


def test_pongs_without_an_outstanding_ping_confirm_nothing(
    relay: Callable[..., RelayServer],
) -> None:
    server = relay(pong=True)
    conn = connection(server, ConfirmMode.PONG)
    conn.connect()
    server.pong = False  # from now on, only forged/unsolicited pongs
    server.inject(PONG * 5)  # e.g. another client publishing t-x-c-t-r
    conn.wait_confirmed(0, 0.01)
    deadline = time.monotonic() + 5
    while conn.counters()["unsolicited_pongs"] < 5:  # read them while nothing is outstanding
        assert time.monotonic() < deadline
        conn._read_any(0.1)
    seq = conn.send([event("a")])
    with pytest.raises(TakConfirmTimeout):
        conn.wait_confirmed(seq, 0.5)
    assert conn.counters()["unsolicited_pongs"] == 5


def test_a_pong_counts_once_per_ping(relay: Callable[..., RelayServer]) -> None:
    server = relay(pong=True)
    conn = connection(server, ConfirmMode.PONG)
    conn.connect()
    server.pong = False
    first = conn.send([event("a")])
    server.inject(PONG * 3)  # three pongs for one outstanding ping
    conn.wait_confirmed(first, 5)
    deadline = time.monotonic() + 5
    while conn.counters()["unsolicited_pongs"] < 2:  # the extra two, read with nothing out
        assert time.monotonic() < deadline
        conn._read_any(0.1)
    second = conn.send([event("b")])  # the two extra pongs must not confirm this one
    with pytest.raises(TakConfirmTimeout):
        conn.wait_confirmed(second, 0.5)
    assert conn.counters()["unsolicited_pongs"] == 2


def test_an_endless_event_from_the_server_is_an_outage(
    relay: Callable[..., RelayServer],
) -> None:
    server = relay(pong=True)
    conn = connection(server, ConfirmMode.PONG, max_unfinished=200_000)
    conn.connect()
    server.inject(b'<event version="2.0" uid="x" type="a-u-G"><detail><remarks>')
    seq = conn.send([event("a")])
    server.pong = False
    server.inject(b"z" * 400_000)
    with pytest.raises(TakOutage) as info:
        conn.wait_confirmed(seq, 10)
    assert info.value.kind is OutageKind.OVERSIZED_EVENT
    assert conn.counters()["oversized_events"] == 1


def test_the_server_never_reads_part_of_an_event(relay: Callable[..., RelayServer]) -> None:
    """Whole events per write; a server reading in small pieces still reassembles them."""
    server = relay(pong=True)
    conn = connection(server, ConfirmMode.PONG)
    conn.connect()
    events = [event(f"u{i}", "é" * (i % 50)) for i in range(500)]
    seq = conn.send(events)
    conn.wait_confirmed(seq, 10)
    conn.close()
    data = b"".join(server.reads)
    assert data.count(b"</event>") == 1 + 1 + 500 + 1  # presence, probe ping, events, ping
