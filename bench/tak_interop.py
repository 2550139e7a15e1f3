"""TAK server compatibility: forwarder throughput per server x transport x ``TAK_CONFIRM``, as a
ratio of a raw sender into the same server, one run each (the README table comes from this).

Servers: taky 0.10 (a fresh one per measurement, TCP and mutual TLS, with ``log_cot`` as our
harness runs it) and FreeTAKServer 2.2.1 (one server in its own network namespace, both ports;
skipped with the reason when it cannot run here). OpenTAKServer has its own harness
(``make interop``).

Both sides are measured the same way, by a witness: a third client of the server that counts the
detections relayed to it. The clock runs from the first write until the witness holds every
uid, so it covers what "delivered" means to a TAK user on every server, including those that
never answer pings.

- raw: a stdlib socket that announces itself (FreeTAKServer takes a connection's first event as
  its identity) and writes the N events in whole-event writes of at most 4 KiB.
- ours: N jobs enqueued beforehand exactly as ingest does, a ``Forwarder`` already connected
  (warm: the mode probe and the read-back connection are set up before the clock starts), run
  until the queue is empty and every record is ``confirmed`` (``sent`` for ``none``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis

from bench import Row
from bench.forwarder import client_context, detection_cot, enqueue, tls_files
from detection_api.local.fts_server import (
    FtsServer,
    FtsUnavailable,
    ensure_fts,
    netns_unavailable_reason,
)
from detection_api.local.pki import PkiPaths, generate_pki
from detection_api.local.ports import free_port
from detection_api.local.redis_server import RedisServer
from detection_api.local.taky_server import TakyServer
from detection_api.store.records import record_key
from detection_api.tak.forwarder import Forwarder, ForwarderConfig
from detection_api.tak.forwarder_metrics import ForwarderMetrics
from detection_api.tak.presence import Presence
from detection_api.tak.stream import CotStreamReader, whole_event_writes
from detection_api.tak.transport import ConfirmMode, open_connection

TAKY_EVENTS = 3_000
FTS_EVENTS = 300
WAIT_SECONDS = 300.0


def _connect(url: str, pki: PkiPaths) -> socket.socket:
    scheme, rest = url.split("://", 1)
    host, port = rest.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=30)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if scheme == "tls":
        return client_context(pki).wrap_socket(raw, server_hostname=pki.server_name)
    return raw


class Witness:
    """A client of the server that counts the bench events relayed to it, by uid."""

    def __init__(self, url: str, pki: PkiPaths, name: str) -> None:
        self.sock = _connect(url, pki)
        self.seen: Counter[str] = Counter()
        self.last_new = 0.0  # perf_counter() when a uid was first seen last
        self._lock = threading.Lock()
        self._stop = threading.Event()
        presence = Presence(f"bench-witness-{name}", f"witness {name}")
        self.sock.sendall(presence.event(datetime.now(UTC)))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        reader = CotStreamReader()
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(1 << 20)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return
            if not data:
                return
            uids = [e.uid for e in reader.feed_events(data) if e.uid.startswith("b")]
            with self._lock:
                before = len(self.seen)
                self.seen.update(uids)
                if len(self.seen) > before:
                    self.last_new = time.perf_counter()

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for uid in self.seen if uid.startswith(prefix))

    def counts(self, prefix: str) -> Counter[str]:
        with self._lock:
            return Counter({u: n for u, n in self.seen.items() if u.startswith(prefix)})

    def wait(self, prefix: str, count: int, timeout: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while self.count(prefix) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"witness saw {self.count(prefix)} of {count} ({prefix!r})")
            time.sleep(0.002)

    def settle(self, prefix: str, count: int, quiet: float = 10.0) -> tuple[int, float]:
        """Wait until all ``count`` arrived or nothing new came for ``quiet`` seconds (a server
        that loses events); returns how many arrived and when the last one did."""
        deadline = time.monotonic() + WAIT_SECONDS
        while self.count(prefix) < count and time.monotonic() < deadline:
            if self.last_new and time.perf_counter() - self.last_new > quiet:
                break
            time.sleep(0.01)
        return self.count(prefix), self.last_new

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _ready(witness: Witness, send: Callable[[bytes], None], tag: str) -> None:
    """Probe until the witness sees the sender's events: both are routed to by the server."""
    prefix = f"b0-{tag}"
    for _ in range(60):
        send(detection_cot(f"b0-{tag}{uuid.uuid4().hex[:8]}").encode())
        try:
            witness.wait(prefix, 1, timeout=0.5)
            return
        except RuntimeError:
            continue
    raise RuntimeError("the witness never saw the sender's events")


def raw_rate(
    url: str, pki: PkiPaths, run: int, count: int, witness_url: str | None = None
) -> float:
    prefix = f"b{run}-"
    events = [detection_cot(f"b{run}-{uuid.uuid4().hex}").encode() for _ in range(count)]
    sender = _connect(url, pki)
    witness = Witness(witness_url or url, pki, f"raw{run}")
    try:
        sender.sendall(Presence(f"bench-raw-{run}", "raw").event(datetime.now(UTC)))
        time.sleep(0.5)  # read alone: FreeTAKServer takes a connection's first read as identity
        _ready(witness, sender.sendall, f"{uuid.uuid4().hex[:4]}r")
        started = time.perf_counter()
        for data in whole_event_writes(events, 4096):
            sender.sendall(data)
        # Nothing confirms a raw sender's events: a server may lose some (FreeTAKServer did).
        arrived, last = witness.settle(prefix, count)
        if arrived < count:
            print(f"bench.tak_interop: raw sender: {count - arrived} of {count} events lost")
        return arrived / (last - started)
    finally:
        witness.close()
        sender.close()


def forwarder_rate(
    redis: Redis,
    url: str,
    pki: PkiPaths,
    mode: ConfirmMode,
    run: int,
    count: int,
    config: ForwarderConfig | None = None,
    witness_url: str | None = None,
) -> float:
    prefix = f"b{run}-"
    redis.flushall()
    cots = [(uuid.uuid4().hex, "") for _ in range(count)]
    cots = [(rid, detection_cot(f"b{run}-{rid}")) for rid, _ in cots]
    witness = Witness(witness_url or url, pki, f"ours{run}")
    connection = open_connection(
        url,
        tls_files(pki) if url.startswith("tls") else None,
        presence=Presence(f"bench-forwarder-{run}", "bench forwarder"),
        confirm=mode,
    )
    try:
        connection.connect()  # warm: probe and read-back connection before the clock
        if connection.mode is not mode:
            raise RuntimeError(f"asked for {mode.value}, the connection uses {connection.mode}")
        _ready(witness, lambda event: connection.send([event]), f"{uuid.uuid4().hex[:4]}o")
        enqueue(redis, cots)
        forwarder = Forwarder(redis, connection, config or ForwarderConfig(), ForwarderMetrics())
        started = time.perf_counter()
        forwarder.run(burst=True)
        witness.wait(prefix, count)
        elapsed = time.perf_counter() - started
    finally:
        witness.close()
        connection.close()
    final = "confirmed" if mode is not ConfirmMode.NONE else "sent"
    with redis.pipeline(transaction=False) as pipe:
        for record_id, _ in cots:
            pipe.hget(record_key(record_id), "state")
        done = sum(state == final.encode() for state in pipe.execute())
    if done != count:
        raise RuntimeError(f"only {done} of {count} records {final}")
    return count / elapsed


def run() -> list[Row]:
    logging.getLogger("detection_api").setLevel(logging.WARNING)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-tak-interop-") as tmp_name:
        tmp = Path(tmp_name)
        pki = generate_pki(tmp / "pki")
        redis_server = RedisServer(data_dir=tmp / "redis", port=free_port()).start()
        counter: Iterator[int] = iter(range(1, 10_000))
        try:
            redis = redis_server.client()
            for tls in (False, True):
                for mode in (ConfirmMode.PONG, ConfirmMode.READBACK, ConfirmMode.NONE):
                    taky = TakyServer(root_dir=tmp / f"taky-{next(counter)}", pki=pki, tls=tls)
                    raw = _with(taky, lambda s: raw_rate(s.url, pki, next(counter), TAKY_EVENTS))
                    taky = TakyServer(root_dir=tmp / f"taky-{next(counter)}", pki=pki, tls=tls)
                    ours = _with(
                        taky,
                        lambda s, m=mode: forwarder_rate(
                            redis, s.url, pki, m, next(counter), TAKY_EVENTS
                        ),
                    )
                    rows.append(_row("taky 0.10", tls, mode, TAKY_EVENTS, ours, raw))
            rows += _fts_rows(tmp, pki, redis, counter)
        finally:
            redis_server.stop()
    return rows


def _with(server: TakyServer, measure: Callable[[TakyServer], float]) -> float:
    server.start()
    try:
        return measure(server)
    finally:
        server.stop()


def _fts_rows(tmp: Path, pki: PkiPaths, redis: Redis, counter: Iterator[int]) -> list[Row]:
    reason = netns_unavailable_reason()
    if reason is None:
        try:
            ensure_fts()
        except FtsUnavailable as exc:
            reason = str(exc).splitlines()[0]
    if reason is not None:
        print(f"bench.tak_interop: FreeTAKServer skipped: {reason}")
        return []
    # FreeTAKServer is slow (its own ceiling is the raw sender's rate) and wedges after a burst
    # it cannot keep up with: a fresh one per pair, and a longer read-back wait.
    config = ForwarderConfig(confirm_timeout_seconds=30.0, batch_size=100)
    rows = []
    for tls in (False, True):
        for mode in (ConfirmMode.READBACK, ConfirmMode.NONE):
            server = FtsServer(tmp / f"fts-{next(counter)}", pki).start()
            try:
                url = server.tls_url if tls else server.tcp_url
                # The witness stays on TCP: a TLS client that has not yet announced itself can
                # hold up FreeTAKServer's TLS accept loop (seen in this bench).
                witness = server.tcp_url
                raw = raw_rate(url, pki, next(counter), FTS_EVENTS, witness)
                time.sleep(5)  # let it finish what the raw burst left behind
                ours = forwarder_rate(
                    redis, url, pki, mode, next(counter), FTS_EVENTS, config, witness
                )
            finally:
                server.stop()
            rows.append(_row("FreeTAKServer 2.2.1", tls, mode, FTS_EVENTS, ours, raw))
    return rows


def _row(server: str, tls: bool, mode: ConfirmMode, count: int, ours: float, raw: float) -> Row:
    transport = "TLS" if tls else "TCP"
    print(f"bench.tak_interop: {server} {transport} {mode.value}: ours {ours:,.0f}/s, "
          f"raw {raw:,.0f}/s, ratio {ours / raw:.2f}", flush=True)  # fmt: skip
    return Row(
        f"{server} {transport} TAK_CONFIRM={mode.value}, {count} events, warm",
        ours,
        "events/s",
        raw,
        f"raw {transport} sender into the same server (witness-timed)",
    )


if __name__ == "__main__":
    for row in run():
        print(f"{row.name}: {row.value:,.0f} events/s  raw {row.baseline:,.0f}  "
              f"ratio {row.ratio:.2f}")  # fmt: skip
