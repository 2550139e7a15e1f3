"""Write-if-absent: all recorded commands or none, in one script call (real Redis server)."""

from __future__ import annotations

import pytest
from limits import parse_many
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis import Redis

from detection_api.store.atomic import AtomicWriter, Budget, BudgetExceeded, Window


def test_writes_everything_when_all_keys_are_absent(redis: Redis) -> None:
    writer = AtomicWriter(redis)
    rec = writer.recorder()
    rec.hset("a", mapping={"x": "1", "y": 2.5})
    rec.rpush("q", "a", "b")
    rec.expire("a", 60)
    assert writer.write_if_absent(["a", "b"], rec) == []
    assert redis.hgetall("a") == {b"x": b"1", b"y": b"2.5"}
    assert redis.lrange("q", 0, -1) == [b"a", b"b"]
    assert 0 < redis.ttl("a") <= 60


def test_writes_nothing_when_any_key_exists(redis: Redis) -> None:
    redis.set("b", "there")
    writer = AtomicWriter(redis)
    rec = writer.recorder()
    rec.hset("a", "x", "1")
    rec.rpush("q", "a")
    assert writer.write_if_absent(["a", "b", "c"], rec) == [1]
    assert not redis.exists("a", "q")


def test_recorder_accepts_rq_enqueues(redis: Redis) -> None:
    from detection_api.store.tak_jobs import Delivery, enqueue_deliveries, tak_queue

    writer = AtomicWriter(redis)
    queue = tak_queue(redis)
    rec = writer.recorder()
    enqueue_deliveries(queue, rec, [Delivery("r1", "<event/>", 1.0)])
    assert writer.write_if_absent(["detection:record:r1"], rec) == []
    assert queue.job_ids == ["r1"]
    assert queue.fetch_job("r1").kwargs["deliveries"] == [{"record_id": "r1", "cot": "<event/>"}]


# --- the rate-limit budget charged by the same script ---------------------------------------------


def _limits(redis: Redis, rules: str) -> tuple[RedisStorage, SlidingWindowCounterRateLimiter, list]:
    port = redis.connection_pool.connection_kwargs["port"]
    storage = RedisStorage(f"redis://127.0.0.1:{port}", key_prefix="detection:ratelimit")
    return storage, SlidingWindowCounterRateLimiter(storage), parse_many(rules)


def _budget(storage: RedisStorage, rules: list, key: str, cost: int) -> Budget:
    windows = tuple(
        Window(
            storage.prefixed_key(storage._previous_window_key(rule.key_for(key))),
            storage.prefixed_key(storage._current_window_key(rule.key_for(key))),
            rule.amount,
            rule.get_expiry(),
        )
        for rule in rules
    )
    return Budget(windows, first=1, rest=cost - 1)


def test_budget_is_charged_on_the_counters_the_limits_library_reads(redis: Redis) -> None:
    storage, limiter, rules = _limits(redis, "150/minute")
    writer = AtomicWriter(redis)
    rec = writer.recorder()
    rec.set("written", "1")
    assert writer.write_if_absent(["m"], rec, _budget(storage, rules, "sub:a", 100)) == []
    assert redis.get("written") == b"1"
    assert limiter.get_window_stats(rules[0], "sub:a").remaining == 50
    assert limiter.get_window_stats(rules[0], "sub:b").remaining == 150
    # ...and a charge the library makes (another route) counts against the script's budget.
    assert limiter.hit(rules[0], "sub:a", cost=10)
    assert limiter.get_window_stats(rules[0], "sub:a").remaining == 40


def test_over_budget_writes_nothing_and_charges_the_arrival(redis: Redis) -> None:
    storage, limiter, rules = _limits(redis, "150/minute")
    writer = AtomicWriter(redis)
    assert limiter.hit(rules[0], "sub:a", cost=100)
    rec = writer.recorder()
    rec.set("written", "1")
    with pytest.raises(BudgetExceeded) as raised:
        writer.write_if_absent(["m"], rec, _budget(storage, rules, "sub:a", 100))
    assert raised.value.window == 0
    assert not redis.exists("written")
    # 100 + 1 (the arrival, as the library's before-request charge made it); 99 more did not fit.
    assert limiter.get_window_stats(rules[0], "sub:a").remaining == 49
    rec = writer.recorder()
    rec.set("written", "1")
    assert writer.write_if_absent(["m"], rec, _budget(storage, rules, "sub:a", 49)) == []
    assert limiter.get_window_stats(rules[0], "sub:a").remaining == 0


def test_budget_names_the_first_full_window_in_order(redis: Redis) -> None:
    storage, limiter, rules = _limits(redis, "1000/hour;5/second")
    writer = AtomicWriter(redis)
    rec = writer.recorder()
    rec.set("written", "1")
    with pytest.raises(BudgetExceeded) as raised:
        writer.write_if_absent([], rec, _budget(storage, rules, "ip:x", 6))
    assert raised.value.window == 1
    assert not redis.exists("written")
    # Each window paid the arrival; the hour also paid the 5 beyond it before the second was full.
    assert limiter.get_window_stats(rules[0], "ip:x").remaining == 1000 - 6
    assert limiter.get_window_stats(rules[1], "ip:x").remaining == 4


def test_existing_marker_after_the_charge_writes_nothing(redis: Redis) -> None:
    storage, limiter, rules = _limits(redis, "10/minute")
    redis.set("m", "there")
    writer = AtomicWriter(redis)
    rec = writer.recorder()
    rec.set("written", "1")
    assert writer.write_if_absent(["m"], rec, _budget(storage, rules, "sub:a", 3)) == [0]
    assert not redis.exists("written")
    assert limiter.get_window_stats(rules[0], "sub:a").remaining == 7  # a redelivery pays too
