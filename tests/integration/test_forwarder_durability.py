"""Crashes and outages: the forwarder, Redis or taky die mid-stream and nothing is lost.

The witness is a TAK subscriber counting distinct uids: every detection must arrive at least once
(duplicates are allowed and reported), every record must end ``confirmed``, and no claim may be
left behind. Outages must not burn delivery attempts or dead-letter anything.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from redis import Redis
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from tak_subscriber import TakSubscriber
from test_forwarder import (  # shared helpers of the forwarder tests
    Enqueued,
    StartWorker,
    attempts,
    enqueue,
    leftover_claims,
    states,
    worker_starter,
)

from detection_api.local.procs import ManagedProcess, wait_until
from detection_api.local.redis_server import RedisServer
from detection_api.local.taky_server import TakyServer


@pytest.fixture
def start_worker(
    start_process: Callable[..., ManagedProcess], redis_server: RedisServer
) -> StartWorker:
    return worker_starter(start_process, redis_server)


def wait_all_confirmed(redis: Redis, items: list[Enqueued], timeout: float) -> None:
    wait_until(
        lambda: states(redis, items) == {"confirmed": len(items)},
        timeout,
        what=f"{len(items)} confirmed records",
        interval=0.2,
    )


def persisted(redis: Redis) -> None:
    """Wait until what was written so far is on disk (an AOF rewrite is fsynced when it ends):
    ingest's 2xx promise covers acknowledged writes, not the last second before a crash."""
    redis.bgrewriteaof()

    def done() -> bool:
        info = redis.info("persistence")
        return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]

    wait_until(done, 20, what="the AOF rewrite")


def report(subscriber_counts: dict[str, int], items: list[Enqueued], what: str) -> None:
    duplicates = sum(n - 1 for uid, n in subscriber_counts.items() if n > 1)
    print(f"\n{what}: {len(items)} detections, 0 lost, {duplicates} delivered twice or more")


def test_forwarder_sigkill_mid_stream_then_restart_loses_nothing(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    items = enqueue(redis, 4000)
    first = start_worker(taky_tls.client_env(), name="worker-1")
    tak_subscriber.wait_for_count(600, timeout=60)
    # Kill while batches are claimed and in flight, not between them.
    wait_until(lambda: leftover_claims(redis) > 0, 10, what="claims in flight", interval=0.001)
    first.process.kill()
    orphaned = leftover_claims(redis)
    assert orphaned > 0
    assert states(redis, items)["confirmed"] < len(items)

    second = start_worker(taky_tls.client_env(), name="worker-2")
    tak_subscriber.wait_for_uids([i.uid for i in items], timeout=120)
    wait_all_confirmed(redis, items, 30)
    assert leftover_claims(redis) == 0
    assert "stopped without releasing its claims" in second.log()
    assert redis.llen("rq:queue:tak") == 0
    report(tak_subscriber.uid_counts(), items, f"forwarder SIGKILL ({orphaned} claims orphaned)")


def test_redis_sigkill_mid_stream_then_restart_loses_nothing(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    items = enqueue(redis, 4000)
    persisted(redis)
    worker = start_worker(taky_tls.client_env())
    tak_subscriber.wait_for_count(600, timeout=60)
    redis_server.kill()
    worker.process.wait_until(
        lambda: "Redis unavailable" in worker.log(), 20, what="the Redis outage to be noticed"
    )
    redis_server.restart()
    redis = redis_server.client()

    tak_subscriber.wait_for_uids([i.uid for i in items], timeout=120)
    wait_all_confirmed(redis, items, 60)
    assert leftover_claims(redis) == 0
    assert worker.process.is_running  # carried on, no restart needed
    report(tak_subscriber.uid_counts(), items, "Redis SIGKILL")


def test_tak_server_outage_pauses_without_burning_attempts(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    tak_subscriber_factory: Callable[..., TakSubscriber],
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    worker = start_worker(taky_tls.client_env(), TAK_RECONNECT_MAX_SECONDS="1")
    before = enqueue(redis, 3000, prefix="before")
    tak_subscriber.wait_for_count(300, timeout=60)
    taky_tls.stop()  # mid-stream: batches in flight are cut off
    worker.process.wait_until(
        lambda: worker.log().count("unavailable [") >= 4, 30, what="several failed reconnects"
    )
    during = enqueue(redis, 500, prefix="during")  # accepted while the server is down
    wait_until(lambda: worker.metric("detection_api_tak_connected") == 0, 10, what="disconnected")
    assert attempts(redis, before + during) == {0: 3500}

    taky_tls.start()  # same port
    after = tak_subscriber_factory(taky_tls)
    items = before + during

    def all_arrived() -> bool:
        return {i.uid for i in items} <= tak_subscriber.uids | after.uids

    wait_until(all_arrived, 120, what="every uid at one of the subscribers", interval=0.2)
    wait_all_confirmed(redis, items, 30)
    assert attempts(redis, items) == {0: 3500}, "an outage must not count as an attempt"
    assert len(FailedJobRegistry("tak", connection=redis, serializer=JSONSerializer)) == 0
    wait_until(
        lambda: worker.metric("detection_api_tak_reconnects_total") >= 1, 10, what="reconnects"
    )
    assert worker.delivered("dead") == 0
    counts = tak_subscriber.uid_counts() + after.uid_counts()
    report(counts, items, "taky outage")


def test_sigterm_during_a_burst_confirms_in_flight_and_exits_in_time(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    items = enqueue(redis, 4000)
    worker = start_worker(taky_tls.client_env())
    tak_subscriber.wait_for_count(500, timeout=60)
    wait_until(lambda: leftover_claims(redis) > 0, 10, what="claims in flight", interval=0.001)
    stopped_at = time.monotonic()
    os.kill(worker.process.pid, signal.SIGTERM)
    wait_until(lambda: worker.process.returncode is not None, 20, what="exit after SIGTERM")
    took = time.monotonic() - stopped_at
    assert worker.process.returncode == 0
    assert took < 20, f"took {took:.1f} s"

    assert leftover_claims(redis) == 0, "nothing may stay claimed"
    final = states(redis, items)
    assert set(final) <= {"confirmed", "queued"}, f"nothing left half-sent: {final}"
    assert redis.llen("rq:queue:tak") == final["queued"]  # the rest waits at the queue
    confirmed = [
        i for i, s in zip(items, _each_state(redis, items), strict=True) if s == "confirmed"
    ]
    tak_subscriber.wait_for_uids([i.uid for i in confirmed], timeout=10)
    print(
        f"\nSIGTERM: exited 0 in {took:.2f} s; {len(confirmed)} confirmed, {final['queued']} queued"
    )


def _each_state(redis: Redis, items: list[Enqueued]) -> list[str]:
    with redis.pipeline(transaction=False) as pipe:
        for item in items:
            pipe.hget(f"detection:record:{item.record_id}", "state")
        return [(s or b"missing").decode() for s in pipe.execute()]
