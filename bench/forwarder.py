"""TAK forwarder throughput and latency against a raw synchronous TLS sender, in one run.

Pairs, each against the same kind of server over mutual TLS on loopback:

- taky (a fresh one for every measurement: taky slows down as its store of not-yet-stale events
  grows, so a reused one would favour whichever side ran first);
- a null sink of ours (a separate process that reads, discards and answers pings), which shows the
  forwarder's own ceiling.

Baseline: a raw sender (stdlib ``ssl``) writes N events then one ping and waits for the pong, the
least any confirmed sender must do. Ours: N jobs enqueued beforehand exactly as ingest does (record
+ rq job in one MULTI), then the forwarder (connected before the clock starts, like the raw
sender) runs until every record is ``confirmed``. Rounds alternate raw/ours; ratios are per
round, medians reported.

Latency: detections enqueued at 200/s while a ``detection-api worker`` process forwards them to
taky; accept-to-confirm is ``confirmed_at - created_at`` of each record. Baseline: the round trip of
one event plus ping on a raw connection to the same taky.

``python -m bench.forwarder`` prints the rows; ``--null-sink PORT CERT KEY CA`` serves the sink.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis

from bench import Row
from bench.processes import BIN, REPO
from detection_api.cot import DetectionFacts, build_detection_event, build_ping
from detection_api.geo.types import ConfidenceFlag, Geolocation
from detection_api.local.pki import PkiPaths, generate_pki
from detection_api.local.ports import free_port
from detection_api.local.procs import ManagedProcess, wait_until
from detection_api.local.redis_server import RedisServer
from detection_api.local.taky_server import TakyServer
from detection_api.store.records import RecordStore, record_key
from detection_api.store.tak_jobs import Delivery, enqueue_deliveries, tak_queue
from detection_api.tak.forwarder import Forwarder, ForwarderConfig
from detection_api.tak.forwarder_metrics import ForwarderMetrics
from detection_api.tak.transport import TLS_RECORD_BYTES, TlsFiles, open_connection

EVENTS = 5_000
ROUNDS = 5
LATENCY_RATE = 200.0  # detections per second
LATENCY_SECONDS = 5.0
PING_MARK = b'type="t-x-c-t"'
PONG_MARK = b'type="t-x-c-t-r"'
_GEO = Geolocation(50.11, 8.68, 112.0, 420.0, 380.0, 12.5, 4.0, 5.8, 2.4, (30.0, 1.0, 30.0),
                   ConfidenceFlag.GREEN)  # fmt: skip


def detection_cot(uid: str) -> str:
    now = datetime.now(UTC)
    facts = DetectionFacts(uid, uid, "vehicle", 0.9, camera_id="cam-1")
    return build_detection_event(
        uid=uid, cot_type="a-u-G-E-V", geolocation=_GEO, facts=facts,
        generated_at=now, captured_at=now,
    )  # fmt: skip


# --- the raw baseline ----------------------------------------------------------------------------


def client_context(pki: PkiPaths) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    client = pki.client("forwarder")
    context.load_cert_chain(str(client.cert), str(client.key))
    return context


class RawSender:
    """The least a confirmed sender does: write the events, one ping, read until the pong.

    Written with the stdlib only, independent of the code under test. Writes go out in TLS
    records of 4 KiB: taky reads 4 KiB per wake-up and would leave the rest of a bigger record
    (and the ping in it) unread.
    """

    def __init__(self, port: int, pki: PkiPaths) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = client_context(pki).wrap_socket(raw, server_hostname=pki.server_name)
        self._tail = b""
        self.round_trip()  # handshake done and the server answers

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(data), TLS_RECORD_BYTES):
            self.sock.sendall(view[start : start + TLS_RECORD_BYTES])

    def round_trip(self, events: bytes = b"") -> None:
        self.send(events + build_ping("bench-raw-ping", datetime.now(UTC)))
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            window = self._tail + data
            self._tail = window[-len(PONG_MARK) :]
            if PONG_MARK in window:
                return

    def close(self) -> None:
        self.sock.close()


def raw_rate(port: int, pki: PkiPaths, events: list[bytes]) -> float:
    sender = RawSender(port, pki)
    try:
        started = time.perf_counter()
        sender.round_trip(b"".join(events))
        return len(events) / (time.perf_counter() - started)
    finally:
        sender.close()


# --- the forwarder -------------------------------------------------------------------------------


def enqueue(redis: Redis, cots: list[tuple[str, str]]) -> None:
    store = RecordStore(redis, 86_400)
    queue = tak_queue(redis)
    for start in range(0, len(cots), 500):
        with redis.pipeline(transaction=True) as pipe:
            pipe.multi()
            deliveries = []
            for record_id, cot in cots[start : start + 500]:
                store.write_new(pipe, record_id, {"state": "queued", "cot": cot})
                deliveries.append(Delivery(record_id, cot, time.time()))
            enqueue_deliveries(queue, pipe, deliveries)
            pipe.execute()


def forwarder_rate(redis: Redis, url: str, pki: PkiPaths, cots: list[tuple[str, str]]) -> float:
    redis.flushall()
    enqueue(redis, cots)
    connection = open_connection(url, tls_files(pki))
    connection.connect()  # like the raw sender, connected before the clock starts
    forwarder = Forwarder(redis, connection, ForwarderConfig(), ForwarderMetrics())
    started = time.perf_counter()
    forwarder.run(burst=True)
    elapsed = time.perf_counter() - started
    with redis.pipeline(transaction=False) as pipe:
        for record_id, _ in cots:
            pipe.hget(record_key(record_id), "state")
        confirmed = sum(state == b"confirmed" for state in pipe.execute())
    if confirmed != len(cots):
        raise RuntimeError(f"only {confirmed} of {len(cots)} records confirmed")
    return len(cots) / elapsed


def tls_files(pki: PkiPaths) -> TlsFiles:
    client = pki.client("forwarder")
    return TlsFiles(
        ca=str(pki.ca.cert),
        cert=str(client.cert),
        key=str(client.key),
        server_name=pki.server_name,
    )


# --- the null sink -------------------------------------------------------------------------------


def serve_null_sink(port: int, cert: str, key: str, ca: str) -> None:
    """Mutual TLS; reads and discards; answers every ping with a pong. Runs until killed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    pong = (
        b'<event version="2.0" uid="null-sink-pong" type="t-x-c-t-r" how="h-g-i-g-o" '
        b'time="2026-01-01T00:00:00.000Z" start="2026-01-01T00:00:00.000Z" '
        b'stale="2026-01-01T00:00:20.000Z"><point lat="0" lon="0" hae="0" ce="1" le="1"/></event>'
    )

    def serve(raw: socket.socket) -> None:
        try:
            conn = context.wrap_socket(raw, server_side=True)
            tail = b""
            while data := conn.recv(1 << 20):
                window = tail + data
                pings = window.count(PING_MARK)
                tail = window[-(len(PING_MARK) - 1) :]
                if pings:
                    conn.sendall(pong * pings)
        except OSError:
            pass
        finally:
            raw.close()

    with socket.create_server(("127.0.0.1", port)) as listener:
        while True:
            raw, _ = listener.accept()
            threading.Thread(target=serve, args=(raw,), daemon=True).start()


def start_null_sink(tmp: Path, pki: PkiPaths) -> tuple[ManagedProcess, int]:
    port = free_port()
    argv = [
        sys.executable, "-m", "bench.forwarder", "--null-sink", str(port),
        str(pki.server.cert), str(pki.server.key), str(pki.ca.cert),
    ]  # fmt: skip
    process = ManagedProcess("null-sink", argv, log_path=tmp / "null-sink.log", cwd=REPO).start()
    process.wait_for_port(port, 30)
    return process, port


# --- latency at a steady rate --------------------------------------------------------------------


def latency_ms(
    redis_server: RedisServer, taky: TakyServer, pki: PkiPaths, tmp: Path
) -> list[float]:
    redis = redis_server.client()
    redis.flushall()
    metrics_port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "FORWARDER_METRICS_PORT": str(metrics_port),
        "LOG_LEVEL": "WARNING",
        **taky.client_env(),
    }
    worker = ManagedProcess(
        "forwarder", [str(BIN / "detection-api"), "worker"], log_path=tmp / "worker.log", env=env
    ).start()
    try:
        worker.wait_for_port(metrics_port, 30)
        records = RecordStore(redis, 86_400)
        # Metrics answer before the TAK connection is up: one confirmed event first, so the
        # figures are the steady state, not the connection set-up.
        warm_up = uuid.uuid4().hex
        enqueue(redis, [(warm_up, detection_cot(f"warm-{warm_up}"))])
        wait_until(
            lambda: (records.get(warm_up) or {}).get("confirmed_at") is not None,
            60,
            what="the warm-up event confirmed",
            interval=0.05,
        )
        ids: list[str] = []
        interval = 1.0 / LATENCY_RATE
        next_at = time.monotonic()
        for _ in range(int(LATENCY_RATE * LATENCY_SECONDS)):
            record_id = uuid.uuid4().hex
            enqueue(redis, [(record_id, detection_cot(f"lat-{record_id}"))])
            ids.append(record_id)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))  # pacing the producer, not waiting

        def stamps() -> list[tuple[float, float | None]]:
            # The record's own decoding: the stored fields are short names in milliseconds.
            decoded = [records.get(record_id) or {} for record_id in ids]
            return [(r.get("created_at", 0.0), r.get("confirmed_at")) for r in decoded]

        wait_until(lambda: all(c for _, c in stamps()), 30, what="all confirmed", interval=0.1)
        return [(c - a) * 1000 for a, c in stamps() if c is not None]
    finally:
        worker.stop(timeout=20)


def raw_round_trip_ms(port: int, pki: PkiPaths, count: int = 200) -> list[float]:
    sender = RawSender(port, pki)
    try:
        times = []
        for i in range(count):
            event = detection_cot(f"rtt-{i}-{uuid.uuid4().hex}").encode()
            started = time.perf_counter()
            sender.round_trip(event)
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(1.0 / LATENCY_RATE)
        return times
    finally:
        sender.close()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


# --- the benchmark -------------------------------------------------------------------------------


def run() -> list[Row]:
    logging.getLogger("detection_api").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-forwarder-") as tmp_name:
        tmp = Path(tmp_name)
        pki = generate_pki(tmp / "pki")
        redis_server = RedisServer(data_dir=tmp / "redis", port=free_port()).start()
        sink: ManagedProcess | None = None
        tak: list[TakyServer] = []

        def fresh_taky() -> TakyServer:
            if tak:
                tak[-1].stop()
            tak.append(TakyServer(root_dir=tmp / f"taky-{len(tak)}", pki=pki, tls=True).start())
            return tak[-1]

        try:
            redis = redis_server.client()
            cots = [(uuid.uuid4().hex, "") for _ in range(EVENTS)]
            cots = [(rid, detection_cot(f"bench-{rid}")) for rid, _ in cots]
            events = [cot.encode() for _, cot in cots]

            def pair(start_server: Callable[[], str]) -> tuple[list[float], list[float]]:
                raw, ours = [], []
                for _ in range(ROUNDS):
                    url = start_server()
                    raw.append(raw_rate(int(url.rsplit(":", 1)[1]), pki, events))
                    url = start_server()
                    ours.append(forwarder_rate(redis, url, pki, cots))
                return raw, ours

            taky_raw, taky_ours = pair(lambda: fresh_taky().url)
            sink, sink_port = start_null_sink(tmp, pki)
            sink_raw, sink_ours = pair(lambda: f"tls://127.0.0.1:{sink_port}")

            taky = fresh_taky()
            lat = latency_ms(redis_server, taky, pki, tmp)
            rtt = raw_round_trip_ms(int(taky.url.rsplit(":", 1)[1]), pki)
        finally:
            if sink is not None:
                sink.stop(timeout=5)
            for server in tak:
                server.stop()
            redis_server.stop()

    def ratio(ours: list[float], raw: list[float]) -> float:
        return statistics.median(o / r for o, r in zip(ours, raw, strict=True))

    raw_name = f"raw TLS sender, {EVENTS} events + 1 ping"
    return [
        Row(f"forwarder -> taky (TLS), {EVENTS} queued", statistics.median(taky_ours),
            "events/s", statistics.median(taky_raw), raw_name, ratio(taky_ours, taky_raw)),
        Row(f"forwarder -> null TLS sink, {EVENTS} queued", statistics.median(sink_ours),
            "events/s", statistics.median(sink_raw), raw_name, ratio(sink_ours, sink_raw)),
        Row(f"accept-to-confirm p50 at {LATENCY_RATE:.0f}/s (taky)", statistics.median(lat), "ms",
            statistics.median(rtt), "raw event+ping round trip p50"),
        Row(f"accept-to-confirm p99 at {LATENCY_RATE:.0f}/s (taky)", p99(lat), "ms", p99(rtt),
            "raw event+ping round trip p99"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forwarder", description=__doc__)
    parser.add_argument("--null-sink", nargs=4, metavar=("PORT", "CERT", "KEY", "CA"))
    args = parser.parse_args(argv)
    if args.null_sink:
        port, cert, key, ca = args.null_sink
        serve_null_sink(int(port), cert, key, ca)
        return 0
    for row in run():
        ratio = "" if row.ratio is None else f"  ratio {row.ratio:.2f}"
        print(f"{row.name}: {row.value:,.1f} {row.unit}  (baseline {row.baseline:,.1f}){ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
