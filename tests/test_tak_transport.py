"""The TAK connection: ping/pong confirmation, the incoming-stream reader, TLS failure reporting.

The servers here are real sockets on 127.0.0.1 (plain TCP or mutual TLS with a generated PKI),
scripted to answer pings, stay silent, interleave other clients' events or hang up. taky itself
is exercised by the integration tests.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detection_api.local.pki import PkiPaths, generate_pki
from detection_api.store.tak_jobs import PayloadRejected, parse_payload
from detection_api.tak.transport import (
    ConfirmMode,
    CotStreamReader,
    OutageKind,
    Scheme,
    StreamTakConnection,
    TakConfirmTimeout,
    TakEndpoint,
    TakOutage,
    TlsFiles,
    UdpTakConnection,
    build_ssl_context,
    open_connection,
)

PING_MARK = b'type="t-x-c-t"'
PONG = (
    b'<event version="2.0" uid="takPong" type="t-x-c-t-r" how="h-g-i-g-o" '
    b'time="2026-01-01T00:00:00.000Z" start="2026-01-01T00:00:00.000Z" '
    b'stale="2026-01-01T00:00:20.000Z"><point lat="0" lon="0" hae="0" ce="1" le="1"/></event>'
)
ROUTED = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<event version="2.0" uid="ATAK-1" type="a-f-G-U-C" how="h-e" '
    b'time="2026-01-01T00:00:00.000Z" start="2026-01-01T00:00:00.000Z" '
    b'stale="2026-01-01T00:05:00.000Z"><point lat="1" lon="2" hae="0" ce="9" le="9"/>'
    b"<detail><remarks>not a t-x-c-t-r pong</remarks></detail></event>"
)


def event(uid: str, cot_type: str = "a-u-G") -> bytes:
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="m-i" '
        'time="2026-01-01T00:00:00.000Z" start="2026-01-01T00:00:00.000Z" '
        'stale="2026-01-01T00:05:00.000Z"><point lat="1" lon="2" hae="0" ce="9" le="9"/>'
        "<detail/></event>"
    ).encode()


# --- a scripted TAK server ------------------------------------------------------------------------


class ScriptedTakServer:
    """Accepts connections, records what arrives, and answers pings as told.

    ``answer(n)`` decides whether the n-th ping (1-based, per connection) gets a pong; before each
    pong the server writes ``before_pong`` (e.g. another client's event), and instead of a pong
    for an unanswered ping ``instead_of_pong``. ``close_at_ping`` hangs up at that ping.
    ``replay=(n, seconds)`` sends n routed events, one every ``seconds``, before the first pong
    (taky replays what it keeps to a new client). ``read_size`` 4096 reads like taky: one
    ``recv(4096)`` per ``select()`` wake-up, so a bigger TLS record leaves data select() cannot
    see.
    """

    def __init__(
        self,
        context: ssl.SSLContext | None = None,
        *,
        answer: Callable[[int], bool] = lambda n: True,
        before_pong: bytes = b"",
        close_at_ping: int | None = None,
        read_size: int = 65536,
        instead_of_pong: bytes = b"",
        replay: tuple[int, float] = (0, 0.0),
    ) -> None:
        self._replay = replay
        self._instead_of_pong = instead_of_pong
        self._read_size = read_size
        self._context = context
        self._answer = answer
        self._before_pong = before_pong
        self._close_at_ping = close_at_ping
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.received = bytearray()
        self.pings = 0
        self.handshake_errors: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    def start(self) -> ScriptedTakServer:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def url(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, raw: socket.socket) -> None:
        conn = raw
        try:
            if self._context is not None:
                raw.settimeout(5)
                conn = self._context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self.handshake_errors.append(str(exc))
            raw.close()
            return
        self._conns.append(conn)
        conn.settimeout(0.1)
        pings_here = 0
        tail = b""
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select([conn], [], [], 0.1)
                if not readable:
                    continue
                data = conn.recv(self._read_size)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            with self._lock:
                self.received += data
            window = tail + data
            new_pings = window.count(PING_MARK)
            tail = window[-(len(PING_MARK) - 1) :]
            for _ in range(new_pings):
                pings_here += 1
                with self._lock:
                    self.pings += 1
                if pings_here == self._close_at_ping:
                    conn.close()
                    return
                if pings_here == 1:
                    for _ in range(self._replay[0]):
                        conn.sendall(ROUTED)
                        time.sleep(self._replay[1])
                if self._answer(pings_here):
                    conn.sendall(self._before_pong + PONG)
                elif self._instead_of_pong:
                    conn.sendall(self._instead_of_pong)
        conn.close()

    def events_received(self) -> int:
        with self._lock:
            return bytes(self.received).count(b"</event>") - self.pings

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        for conn in self._conns:
            conn.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    return generate_pki(tmp_path_factory.mktemp("pki"))


def server_context(
    pki: PkiPaths, *, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert or pki.server.cert, key or pki.server.key)
    context.load_verify_locations(pki.ca.cert)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, like TAK Server and taky
    return context


def client_files(pki: PkiPaths, **overrides: object) -> TlsFiles:
    values: dict[str, object] = {
        "ca": str(pki.ca.cert),
        "cert": str(pki.client().cert),
        "key": str(pki.client().key),
        "server_name": pki.server_name,
    }
    values.update(overrides)
    return TlsFiles(**values)  # type: ignore[arg-type]


@pytest.fixture
def start_server() -> Iterator[Callable[..., ScriptedTakServer]]:
    servers: list[ScriptedTakServer] = []

    def start(*args: object, **kwargs: object) -> ScriptedTakServer:
        server = ScriptedTakServer(*args, **kwargs).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# --- endpoints -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tls://tak.example.org:8089", TakEndpoint(Scheme.TLS, "tak.example.org", 8089)),
        ("ssl://10.0.0.5:8089", TakEndpoint(Scheme.TLS, "10.0.0.5", 8089)),
        ("tcp://127.0.0.1:8087", TakEndpoint(Scheme.TCP, "127.0.0.1", 8087)),
        ("udp://239.2.3.1:6969", TakEndpoint(Scheme.UDP, "239.2.3.1", 6969)),
    ],
)
def test_endpoint_parses_the_three_schemes(url: str, expected: TakEndpoint) -> None:
    assert TakEndpoint.parse(url) == expected


@pytest.mark.parametrize("url", ["http://tak:8089", "tls://tak", "tcp://:8087", "tak:8089"])
def test_endpoint_rejects_what_it_cannot_connect_to(url: str) -> None:
    with pytest.raises(ValueError, match="TAK_URL"):
        TakEndpoint.parse(url)


# --- the incoming stream -------------------------------------------------------------------------


def test_reader_counts_pongs_and_skips_other_events() -> None:
    reader = CotStreamReader()
    types = reader.feed(ROUTED + PONG + b"<?xml version='1.0'?>" + ROUTED + PONG)
    assert types == ["a-f-G-U-C", "t-x-c-t-r", "a-f-G-U-C", "t-x-c-t-r"]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(ROUTED) * 2 + len(PONG) * 2)))
def test_reader_finds_every_event_whatever_the_read_boundaries(cuts: list[int]) -> None:
    """TCP splits the stream anywhere: inside a tag, an attribute or an XML declaration."""
    stream = ROUTED + PONG + ROUTED + PONG
    reader = CotStreamReader()
    types: list[str] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        types += reader.feed(stream[start:cut])
        start = max(start, cut)
    assert types == ["a-f-G-U-C", "t-x-c-t-r", "a-f-G-U-C", "t-x-c-t-r"]


def test_reader_recovers_after_garbage() -> None:
    reader = CotStreamReader()
    assert reader.feed(b"<event uid='x' <<<>>> garbage") == []
    # After a reset the next complete event is read again.
    assert reader.feed(PONG) == ["t-x-c-t-r"]


def test_reader_memory_stays_flat_on_a_long_stream() -> None:
    reader = CotStreamReader()
    for _ in range(2000):
        assert reader.feed(ROUTED) == ["a-f-G-U-C"]
    assert reader._root is not None
    assert len(reader._root) == 0


# --- confirmation over TCP and TLS ----------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
def test_events_are_confirmed_by_the_pong_that_follows_them(
    scheme: str, pki: PkiPaths, start_server: Callable[..., ScriptedTakServer]
) -> None:
    server = start_server(
        server_context(pki) if scheme == "tls" else None, before_pong=ROUTED, read_size=4096
    )
    connection = open_connection(server.url(scheme), client_files(pki))
    connection.connect()  # one ping round trip
    assert server.pings == 1
    events = [event(f"uid-{i}") for i in range(500)]  # > 4 KiB: many TLS records
    seq = connection.send(events)
    connection.wait_confirmed(seq, timeout=10)
    assert server.events_received() == 1 + 500  # the forwarder's presence, then the batch
    assert server.pings == 2
    assert isinstance(connection, StreamTakConnection)
    assert connection.routed_events_skipped >= 2  # the routed events were read and skipped
    connection.close()


def test_several_pings_in_flight_are_confirmed_in_order(
    pki: PkiPaths, start_server: Callable[..., ScriptedTakServer]
) -> None:
    server = start_server(None)
    connection = open_connection(server.url("tcp"))
    connection.connect()
    first = connection.send([event("a")])
    second = connection.send([event("b")])
    connection.wait_confirmed(second, timeout=5)  # the later pong implies the earlier one
    connection.wait_confirmed(first, timeout=0.01)
    connection.close()


def test_a_silent_server_times_out_and_the_connection_is_dropped(
    start_server: Callable[..., ScriptedTakServer],
) -> None:
    server = start_server(None, answer=lambda n: n == 1)  # answers the connect ping only
    connection = open_connection(server.url("tcp"))
    connection.connect()
    seq = connection.send([event("x")])
    started = time.monotonic()
    with pytest.raises(TakConfirmTimeout):
        connection.wait_confirmed(seq, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3
    # A late pong must not confirm a later batch: the connection is gone.
    assert not connection.connected


def test_other_clients_events_never_count_as_a_pong(
    start_server: Callable[..., ScriptedTakServer],
) -> None:
    server = start_server(None, answer=lambda n: n == 1, instead_of_pong=ROUTED * 3)
    connection = open_connection(server.url("tcp"))
    connection.connect()
    seq = connection.send([event("x")])
    with pytest.raises(TakConfirmTimeout):
        connection.wait_confirmed(seq, timeout=0.5)
    assert isinstance(connection, StreamTakConnection)
    assert connection.routed_events_skipped == 3


def test_a_server_that_never_pongs_is_an_outage_at_connect(
    start_server: Callable[..., ScriptedTakServer],
) -> None:
    """E.g. TAK Server's input-only port 8087: it accepts the connection and never answers."""
    server = start_server(None, answer=lambda n: False)
    connection = StreamTakConnection(
        TakEndpoint.parse(server.url("tcp")),
        handshake_confirm_timeout=0.3,
        confirm=ConfirmMode.PONG,
    )
    with pytest.raises(TakOutage) as info:
        connection.connect()
    assert info.value.kind is OutageKind.NO_PONG


def test_a_long_replay_on_connect_is_read_through_to_the_pong(
    start_server: Callable[..., ScriptedTakServer],
) -> None:
    """Data flowing extends the first pong's deadline; silence does not."""
    server = start_server(None, replay=(8, 0.1))  # 0.8 s of replay, silent gaps of 0.1 s
    endpoint = TakEndpoint.parse(server.url("tcp"))
    connection = StreamTakConnection(endpoint, handshake_confirm_timeout=0.3)
    connection.connect()
    assert connection.routed_events_skipped == 8
    connection.close()


def test_a_server_hanging_up_before_the_pong_is_an_outage(
    start_server: Callable[..., ScriptedTakServer],
) -> None:
    server = start_server(None, close_at_ping=2)
    connection = open_connection(server.url("tcp"))
    connection.connect()
    seq = connection.send([event("x")])
    with pytest.raises(TakOutage) as info:
        connection.wait_confirmed(seq, timeout=5)
    assert info.value.kind is OutageKind.CLOSED


def test_refused_connection_is_an_unreachable_outage() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        connection = open_connection(f"tcp://127.0.0.1:{port}")
        with pytest.raises(TakOutage) as info:
            connection.connect()
    assert info.value.kind is OutageKind.UNREACHABLE


# --- TLS failures say what is wrong ---------------------------------------------------------------


def test_server_certificate_from_another_ca_is_reported(
    pki: PkiPaths, start_server: Callable[..., ScriptedTakServer]
) -> None:
    server = start_server(server_context(pki))
    connection = open_connection(server.url("tls"), client_files(pki, ca=str(pki.wrong_ca.cert)))
    with pytest.raises(TakOutage) as info:
        connection.connect()
    assert info.value.kind is OutageKind.TLS_SERVER_CERT
    assert "TAK_TLS_CA" in info.value.message


def test_host_name_mismatch_is_reported(
    pki: PkiPaths, start_server: Callable[..., ScriptedTakServer]
) -> None:
    server = start_server(
        server_context(pki, cert=pki.wrong_host_server.cert, key=pki.wrong_host_server.key)
    )
    connection = open_connection(server.url("tls"), client_files(pki))
    with pytest.raises(TakOutage) as info:
        connection.connect()
    assert info.value.kind is OutageKind.TLS_HOSTNAME
    assert "TAK_TLS_SERVER_NAME" in info.value.message


def test_client_certificate_from_another_ca_is_reported(
    pki: PkiPaths, start_server: Callable[..., ScriptedTakServer]
) -> None:
    """TLS 1.3 tells the client only on its first read: the connect-time ping catches it."""
    server = start_server(server_context(pki))
    files = client_files(pki, cert=str(pki.wrong_ca_client.cert), key=str(pki.wrong_ca_client.key))
    connection = open_connection(server.url("tls"), files)
    with pytest.raises(TakOutage) as info:
        connection.connect()
    assert info.value.kind is OutageKind.TLS_CLIENT_CERT
    assert server.events_received() == 0


def test_missing_client_certificate_is_reported(
    pki: PkiPaths, start_server: Callable[..., ScriptedTakServer]
) -> None:
    server = start_server(server_context(pki))
    connection = open_connection(server.url("tls"), client_files(pki, cert=None, key=None))
    with pytest.raises(TakOutage) as info:
        connection.connect()
    assert info.value.kind is OutageKind.TLS_CLIENT_CERT
    assert "no client certificate" in info.value.message


def test_unreadable_certificate_files_are_a_configuration_outage(tmp_path: Path) -> None:
    with pytest.raises(TakOutage) as info:
        build_ssl_context(TlsFiles(ca=str(tmp_path / "missing-ca.pem")))
    assert info.value.kind is OutageKind.TLS_CONFIG


def test_pkcs12_client_identity_is_loaded_and_no_key_stays_on_disk(
    pki: PkiPaths,
    start_server: Callable[..., ScriptedTakServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the private PEM is written, briefly
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    server = start_server(server_context(pki))
    client = pki.client()
    files = TlsFiles(
        ca=str(pki.ca.cert),
        p12=str(client.p12),
        p12_password=client.p12_password,
        server_name=pki.server_name,
    )
    connection = open_connection(server.url("tls"), files)
    connection.connect()
    connection.wait_confirmed(connection.send([event("p12")]), timeout=5)
    connection.close()
    assert list(tmp_path.iterdir()) == []


def test_wrong_pkcs12_password_is_a_configuration_outage(pki: PkiPaths) -> None:
    client = pki.client()
    with pytest.raises(TakOutage) as info:
        build_ssl_context(TlsFiles(ca=str(pki.ca.cert), p12=str(client.p12), p12_password="no"))
    assert info.value.kind is OutageKind.TLS_CONFIG


def test_close_after_tls_is_clean_for_the_peer(
    pki: PkiPaths, start_server: Callable[..., ScriptedTakServer]
) -> None:
    server = start_server(server_context(pki))
    connection = open_connection(server.url("tls"), client_files(pki))
    connection.connect()
    connection.close()
    connection.close()  # idempotent
    assert not connection.connected


# --- UDP -----------------------------------------------------------------------------------------


def test_udp_sends_one_datagram_per_event_and_confirms_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        connection = open_connection(f"udp://127.0.0.1:{port}")
        assert isinstance(connection, UdpTakConnection)
        assert connection.confirms is False
        connection.connect()
        events = [event(f"udp-{i}") for i in range(20)]
        connection.wait_confirmed(connection.send(events), timeout=0)
        received = [receiver.recv(65535) for _ in events]
        connection.close()
    assert received == events


# --- what may go on the wire ----------------------------------------------------------------------


def test_payload_checks_for_the_previous_version_v1() -> None:
    good = {"v": 1, "record_id": "r1", "cot": event("u").decode(), "accepted_at": 1000.0}
    check = {"job_id": "r1", "now": 1001.0, "retention_seconds": 60}
    [payload] = parse_payload(good, **check)
    assert (payload.job_id, payload.record_id) == ("r1", "r1")
    assert payload.cot == event("u")
    assert payload.accepted_at == 1000.0
    with pytest.raises(PayloadRejected, match="newer than this forwarder supports"):
        parse_payload({**good, "v": 99}, **check)
    with pytest.raises(PayloadRejected, match="retention exceeded"):
        parse_payload(good, **{**check, "now": 1061.0})
    with pytest.raises(PayloadRejected, match="record_id"):
        parse_payload({**good, "record_id": ""}, **check)
    with pytest.raises(PayloadRejected, match="exceeds"):
        parse_payload(good, **check, max_event_bytes=10)


def test_payload_checks_for_the_current_version_v2_batches() -> None:
    items = [{"record_id": f"r{i}", "cot": event(f"u{i}").decode()} for i in range(3)]
    good = {"v": 2, "accepted_at": 1000.0, "deliveries": items}
    payloads = parse_payload(good, job_id="r0", now=1001.0, retention_seconds=60)
    assert [p.record_id for p in payloads] == ["r0", "r1", "r2"]
    assert {p.job_id for p in payloads} == {"r0"}
    with pytest.raises(PayloadRejected, match="no deliveries"):
        parse_payload({**good, "deliveries": []}, job_id="r0", now=1001.0, retention_seconds=60)
    broken = {**good, "deliveries": [*items, {"record_id": "r9", "cot": "<event uid='x'/>"}]}
    with pytest.raises(PayloadRejected, match="lacks"):
        parse_payload(broken, job_id="r0", now=1001.0, retention_seconds=60)
