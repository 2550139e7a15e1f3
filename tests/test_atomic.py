"""Write-if-absent: all recorded commands or none, in one script call, with the rate-limit charge
taken first by the limits library's own script (real Redis server)."""

from __future__ import annotations

import time

import pytest
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis import Redis

from detection_api.store.atomic import AtomicWriter, RateLimited, WindowCharge, json_command


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


def _commands(prefix: str) -> list[tuple[str, ...]]:
    """Commands of every argument kind ingest records, on keys under ``prefix``."""
    hostile = 'caf\u00e9 \u2603 "quoted" \\back\\slash\x00nul [not json] \U0001f6f0'
    return [
        ("hset", f"{prefix}h", {"t": hostile, "i": 1733300000123, "f": 0.1, "n": -(2**60)}),
        ("hset", f"{prefix}b", {"data": b"\x78\x9c\xff\x00 binary", "s": "text"}),
        ("rpush", f"{prefix}q", "[1, 2]", "{}", ""),
        ("set", f"{prefix}s", "v", 90),
        ("expire", f"{prefix}h", 60),
    ]


def _record(pipe: object, commands: list[tuple[str, ...]]) -> None:
    for name, key, *rest in commands:
        method = getattr(pipe, name)
        if name == "hset":
            method(key, mapping=rest[0])
        elif name == "set":
            method(key, rest[0], ex=rest[1])
        else:
            method(key, *rest)


def test_the_script_writes_what_redis_py_writes(redis: Redis) -> None:
    """Text and numbers travel as one JSON array per command, bytes as arguments of their own:
    either way Redis holds exactly what redis-py's own pipeline writes."""
    with redis.pipeline() as pipe:
        _record(pipe, _commands("py:"))
        pipe.execute()
    writer = AtomicWriter(redis)
    rec = writer.recorder()
    _record(rec, _commands("ours:"))
    assert writer.write_if_absent([], rec) == []
    for suffix in ("h", "b"):
        assert redis.hgetall(f"ours:{suffix}") == redis.hgetall(f"py:{suffix}")
    assert redis.hget("ours:h", "t").decode() == _commands("")[0][2]["t"]
    assert (
        redis.hget("ours:h", "f") == b"0.1" and redis.hget("ours:h", "n") == b"-1152921504606846976"
    )
    assert redis.hget("ours:b", "data") == b"\x78\x9c\xff\x00 binary"
    assert redis.lrange("ours:q", 0, -1) == [b"[1, 2]", b"{}", b""]
    assert redis.get("ours:s") == b"v" and 0 < redis.ttl("ours:s") <= 90
    assert 0 < redis.ttl("ours:h") <= 60


def test_json_command_takes_text_and_numbers_only() -> None:
    assert json_command(("HSET", "k", "f", 12, 2.5)) == b'["HSET","k","f","12","2.5"]'
    assert json_command(("SET", "k", "\u00e9\x00")) == '["SET","k","\u00e9\\u0000"]'.encode()
    assert json_command(("HSET", "k", "data", b"\x00")) is None  # bytes: arguments of their own
    assert json_command(("SET", "k", True)) is None  # redis-py refuses bools: let it say so
    assert json_command(("SET", "k", "\ud800")) is None  # a lone surrogate: redis-py's error
    assert json_command(["RPUSH", "q", "a", "b"]) == b'["RPUSH","q","a","b"]'  # all text
    assert json_command(("EXPIRE", "k", 2**60)) == b'["EXPIRE","k","1152921504606846976"]'
    assert json_command(("SET", "k", "v", "EX", 1.0)) == b'["SET","k","v","EX","1.0"]'

    class Label(str):
        pass

    # a str subclass (an enum member, say) is text: its characters, which redis-py would send
    assert json_command(("SET", "k", Label("v"))) == b'["SET","k","v"]'
    assert json_command(("SET", "k", 1, Label("v"))) is None  # (the slow way is for exact types)


def test_recorder_accepts_rq_enqueues(redis: Redis) -> None:
    from detection_api.store.tak_jobs import Delivery, enqueue_deliveries, tak_queue

    writer = AtomicWriter(redis)
    queue = tak_queue(redis)
    rec = writer.recorder()
    enqueue_deliveries(queue, rec, [Delivery("r1", "<event/>", 1.0)])
    assert writer.write_if_absent(["detection:record:r1"], rec) == []
    assert queue.job_ids == ["r1"]
    assert queue.fetch_job("r1").kwargs["deliveries"] == [{"record_id": "r1", "cot": "<event/>"}]


# -- the rate-limit charge taken with the write ----------------------------------------------------


def _charge(name: str, limit: int, amount: int, expiry_seconds: int = 60) -> WindowCharge:
    return WindowCharge(f"{name}/-1", name, limit, expiry_seconds, amount)


def test_charges_are_taken_with_the_write(redis: Redis) -> None:
    writer = AtomicWriter(redis)
    rec = writer.recorder()
    rec.rpush("q", "job")
    assert writer.write_if_absent(["m"], rec, [_charge("{w}", 10, 3)]) == []
    assert redis.lrange("q", 0, -1) == [b"job"]
    assert redis.get("{w}") == b"3"
    assert 60_000 < redis.pttl("{w}") <= 120_000  # the library keeps a window for twice its length


def test_a_refused_charge_writes_nothing_and_names_the_refused_charge(redis: Redis) -> None:
    writer = AtomicWriter(redis)
    rec = writer.recorder()
    rec.rpush("q", "job")
    charges = [_charge("{a}", 10, 1), _charge("{b}", 2, 1), _charge("{b}", 2, 5)]
    with pytest.raises(RateLimited) as refused:
        writer.write_if_absent(["m"], rec, charges)
    assert refused.value.index == 2
    assert not redis.exists("q")
    # The charges before the refused one were taken, as separate hits would have taken them.
    assert redis.get("{a}") == b"1"
    assert redis.get("{b}") == b"1"


def test_a_redelivery_pays_its_charge_and_writes_nothing(redis: Redis) -> None:
    redis.set("marker", "r1")
    writer = AtomicWriter(redis)
    rec = writer.recorder()
    rec.rpush("q", "job")
    assert writer.write_if_absent(["marker"], rec, [_charge("{w}", 10, 1)]) == [0]
    assert not redis.exists("q")
    assert redis.get("{w}") == b"1"


def test_charge_alone_takes_it_or_raises(redis: Redis) -> None:
    writer = AtomicWriter(redis)
    writer.charge([_charge("{w}", 2, 2)])
    assert redis.get("{w}") == b"2"
    with pytest.raises(RateLimited):
        writer.charge([_charge("{w}", 2, 1)])
    writer.charge([])  # nothing to take: no round trip, no error


def test_charges_decide_exactly_as_the_limits_library_does(redis: Redis) -> None:
    """The script runs the library's acquire script; the same amounts against the library's own
    hit on a twin window give the same answers, count and expiry, including the window shift."""
    storage = RedisStorage(
        f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}/0", key_prefix="t"
    )
    limiter = SlidingWindowCounterRateLimiter(storage)
    rule = RateLimitItemPerSecond(10, 1)
    writer = AtomicWriter(redis)
    ours = "t:{ours}"
    theirs_key = storage.prefixed_key("{" + rule.key_for("theirs") + "}")
    amounts = [3, 4, 4, 2, 1, 1, 11, 1, 5, 5, 1]
    for step, amount in enumerate(amounts):
        if step == 6:
            time.sleep(1.1)  # into the next window: the library shifts current -> previous
        theirs = limiter.hit(rule, "theirs", cost=amount)
        try:
            writer.charge([WindowCharge(f"{ours}/-1", ours, 10, 1, amount)])
            taken = True
        except RateLimited:
            taken = False
        assert taken == theirs, (step, amount)
        assert redis.get(ours) == redis.get(theirs_key), step
        assert redis.get(f"{ours}/-1") == redis.get(f"{theirs_key}/-1"), step
