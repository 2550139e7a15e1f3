"""The claim ledger against a real Redis: ids move between the queue and a consumer's in-flight
list atomically, and while held they are listed in rq's started registry (what ``rq info`` and
rq-dashboard count as executing)."""

from __future__ import annotations

import threading
import time

from redis import Redis
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.worker import Worker

from detection_api.store.claims import ClaimLedger

QUEUE = "rq:queue:tak"
WIP = StartedJobRegistry("tak", connection=Redis()).key  # (no connection is made)


def _ledger(redis: Redis, name: str = "f1", *, registry: bool = True) -> ClaimLedger:
    return ClaimLedger(
        redis,
        QUEUE,
        name,
        10.0,
        started_registry_key=WIP if registry else None,
        worker_key=Worker.redis_worker_namespace_prefix + name,
    )


def _wip(redis: Redis) -> set[str]:
    return {m.decode() for m in redis.zrange(WIP, 0, -1)}


def test_the_started_registry_key_is_rqs() -> None:
    assert WIP == "rq:wip:tak"


def test_claimed_ids_are_listed_as_executing_and_the_worker_busy(redis: Redis) -> None:
    redis.rpush(QUEUE, "j1", "j2", "j3")
    ledger = _ledger(redis)
    assert ledger.claim(2, 0) == ["j1", "j2"]
    assert _wip(redis) == {"j1:f1", "j2:f1"}
    assert redis.hget("rq:worker:f1", "state") == b"busy"
    registry = StartedJobRegistry("tak", connection=redis)
    assert registry.get_job_ids(cleanup=False) == ["j1", "j2"]


def test_a_blocking_claim_registers_the_id_it_waited_for(redis: Redis) -> None:
    redis.rpush(QUEUE, "j1")
    ledger = _ledger(redis)
    redis.rpush(QUEUE, "j2")
    # Queue not empty: the script takes both; empty it and block for the next one.
    assert ledger.claim(5, 0) == ["j1", "j2"]
    redis.rpush(QUEUE, "j3")
    ledger.release_delivered(redis, ["j1", "j2"])
    assert ledger.claim(5, 1) == ["j3"]
    assert _wip(redis) == {"j3:f1"}


def test_release_requeue_and_forget_take_them_out_again(redis: Redis) -> None:
    redis.rpush(QUEUE, "j1", "j2", "j3", "j4")
    ledger = _ledger(redis)
    ledger.claim(4, 0)
    redis.hset(Job.key_for("j1"), "data", "x")
    ledger.release_delivered(redis, ["j1"])
    assert not redis.exists(Job.key_for("j1"))
    assert ledger.requeue(["j2"]) == 1
    with redis.pipeline(transaction=True) as pipe:
        ledger.forget(pipe, ["j3"])
        pipe.execute()
    assert _wip(redis) == {"j4:f1"}
    assert redis.lrange(QUEUE, 0, -1) == [b"j2"]
    assert ledger.requeue_inflight() == 1
    assert _wip(redis) == set()
    assert redis.lrange(QUEUE, 0, -1) == [b"j4", b"j2"]


def test_a_dead_forwarders_claims_leave_the_registry_when_reaped(redis: Redis) -> None:
    redis.rpush(QUEUE, "j1", "j2")
    dead = _ledger(redis, "dead")
    dead.claim(2, 0)
    redis.delete(dead.alive_key)  # (its alive key expired)
    survivor = _ledger(redis, "alive")
    [reaped] = survivor.reap_dead_forwarders()
    assert (reaped.forwarder, reaped.job_count) == ("dead", 2)
    assert _wip(redis) == set()
    assert redis.lrange(QUEUE, 0, -1) == [b"j1", b"j2"]


def test_registering_costs_one_command_per_batch(redis: Redis) -> None:
    ids = [f"j{i}" for i in range(200)]
    redis.rpush(QUEUE, *ids)
    with_registry, without = _ledger(redis, "a"), _ledger(redis, "b", registry=False)
    without.claim(1, 0)  # (loads the script)
    with_registry.claim(1, 0)

    def calls() -> int:
        stats = redis.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

    before = calls()
    without.claim(99, 0)
    plain = calls() - before
    before = calls()
    with_registry.claim(99, 0)
    assert calls() - before == plain + 2  # one ZADD for the batch, one HSET of the worker state


def test_a_claim_of_nothing_takes_nothing(redis: Redis) -> None:
    redis.rpush(QUEUE, "j1", "j2")
    assert _ledger(redis).claim(0, 0) == []
    assert redis.lrange(QUEUE, 0, -1) == [b"j1", b"j2"]


def test_a_blocking_claim_of_one_takes_one(redis: Redis) -> None:
    ledger = _ledger(redis)

    def push_while_blocked() -> None:
        time.sleep(0.3)  # the claim finds the queue empty and waits in BLMOVE
        redis.rpush(QUEUE, "j1", "j2", "j3")

    pusher = threading.Thread(target=push_while_blocked)
    pusher.start()
    try:
        assert ledger.claim(1, 10) == ["j1"]
    finally:
        pusher.join()
    assert redis.lrange(QUEUE, 0, -1) == [b"j2", b"j3"]
