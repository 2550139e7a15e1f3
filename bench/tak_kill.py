"""2,000 detections with the forwarder SIGKILLed once mid-run, against taky and FreeTAKServer.

The real ``detection-api worker`` (default ``TAK_CONFIRM=auto``: ``pong`` on taky, ``readback``
on FreeTAKServer) forwards 2,000 queued detections over mutual TLS; once a witness client of the
server has received some and batches are in flight, the worker is SIGKILLed and a second one
started. Every record must end ``confirmed``, none dead-lettered, every detection seen by the
witness; the rows report the duplicates (at least once: a batch in flight when the worker died is
sent again). A loss or a dead letter fails the benchmark.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis
from rq.registry import FailedJobRegistry

from bench import Row
from bench.forwarder import detection_cot, enqueue
from bench.processes import BIN
from bench.tak_interop import Witness, _connect, _ready
from detection_api.local.fts_server import (
    FtsServer,
    FtsUnavailable,
    ensure_fts,
    netns_unavailable_reason,
)
from detection_api.local.pki import PkiPaths, generate_pki
from detection_api.local.ports import free_port
from detection_api.local.procs import ManagedProcess, wait_until
from detection_api.local.redis_server import RedisServer
from detection_api.local.taky_server import TakyServer
from detection_api.store.records import record_key
from detection_api.tak.presence import Presence

DETECTIONS = 2_000


def _worker(name: str, tmp: Path, redis_url: str, tak_env: dict[str, str]) -> ManagedProcess:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "FORWARDER_METRICS_PORT": str(free_port()),
        "TAK_CONFIRM_TIMEOUT_SECONDS": "20",
        "TAK_RECONNECT_MAX_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
        **tak_env,
    }
    return ManagedProcess(
        name, [str(BIN / "detection-api"), "worker"], log_path=tmp / f"{name}.log", env=env
    ).start()


def _inflight(redis: Redis) -> int:
    return sum(redis.llen(key) for key in redis.scan_iter("detection:forwarder:*:inflight"))


def kill_run(
    label: str, witness_url: str, tak_env: dict[str, str], pki: PkiPaths, tmp: Path, redis_url: str
) -> Row:
    redis = Redis.from_url(redis_url)
    redis.flushall()
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    cots = [(uuid.uuid4().hex, "") for _ in range(DETECTIONS)]
    cots = [(rid, detection_cot(f"{prefix}{rid}")) for rid, _ in cots]
    witness = Witness(witness_url, pki, label.split(maxsplit=1)[0])
    probe = _connect(witness_url, pki)
    try:
        probe.sendall(Presence(f"bench-probe-{prefix}", "probe").event(datetime.now(UTC)))
        time.sleep(0.5)  # read alone: FreeTAKServer takes a connection's first read as identity
        _ready(witness, probe.sendall, f"{uuid.uuid4().hex[:4]}k")
        enqueue(redis, cots)
        first = _worker("worker-1", tmp, redis_url, tak_env)
        wait_until(lambda: witness.count(prefix) >= DETECTIONS // 10, 300, what="first arrivals")
        wait_until(lambda: _inflight(redis) > 0, 60, what="claims in flight", interval=0.001)
        orphaned = _inflight(redis)
        first.kill()
        second = _worker("worker-2", tmp, redis_url, tak_env)
        try:

            def confirmed() -> int:
                with redis.pipeline(transaction=False) as pipe:
                    for record_id, _ in cots:
                        pipe.hget(record_key(record_id), "state")
                    return sum(s == b"confirmed" for s in pipe.execute())

            started = time.monotonic()
            wait_until(lambda: confirmed() == DETECTIONS, 600, what="all confirmed", interval=0.5)
            recovery = time.monotonic() - started
            witness.wait(prefix, DETECTIONS, timeout=60)
        finally:
            second.stop(timeout=20)
        counts = witness.counts(prefix)
        dead = FailedJobRegistry("tak", connection=redis).count
        lost = DETECTIONS - len(counts)
        duplicates = sum(n - 1 for n in counts.values())
        if lost or dead:
            raise RuntimeError(f"{label}: {lost} lost, {dead} dead-lettered")
        return Row(
            f"{label}: {DETECTIONS} detections, forwarder SIGKILLed with {orphaned} in flight: "
            f"0 lost, 0 dead-lettered (finished {recovery:.0f} s after the kill); duplicates",
            float(duplicates),
            "events",
        )
    finally:
        probe.close()
        witness.close()


@contextmanager
def _servers(tmp: Path, pki: PkiPaths) -> Iterator[list[tuple[str, str, dict[str, str]]]]:
    taky = TakyServer(root_dir=tmp / "taky", pki=pki, tls=True).start()
    servers = [("taky 0.10 TLS", taky.url, taky.client_env())]
    fts: FtsServer | None = None
    reason = netns_unavailable_reason()
    if reason is None:
        try:
            ensure_fts()
            fts = FtsServer(tmp / "fts", pki).start()
            # Witness on TCP: a TLS client that has not announced itself yet can hold up
            # FreeTAKServer's TLS accept loop; the forwarder uses TLS.
            servers.append(("FreeTAKServer 2.2.1 TLS", fts.tcp_url, fts.client_env(tls=True)))
        except FtsUnavailable as exc:
            reason = str(exc).splitlines()[0]
    if reason is not None:
        print(f"bench.tak_kill: FreeTAKServer skipped: {reason}")
    try:
        yield servers
    finally:
        taky.stop()
        if fts is not None:
            fts.stop()


def run() -> list[Row]:
    logging.getLogger("detection_api").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-tak-kill-") as tmp_name:
        tmp = Path(tmp_name)
        pki = generate_pki(tmp / "pki")
        redis_server = RedisServer(data_dir=tmp / "redis", port=free_port()).start()
        try:
            with _servers(tmp, pki) as servers:
                return [
                    kill_run(label, url, env, pki, tmp, redis_server.url)
                    for label, url, env in servers
                ]
        finally:
            redis_server.stop()


if __name__ == "__main__":
    for row in run():
        print(f"{row.name}: {row.value:.0f} {row.unit}")
