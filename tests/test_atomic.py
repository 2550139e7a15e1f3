"""Write-if-absent: all recorded commands or none, in one script call (real Redis server)."""

from __future__ import annotations

from redis import Redis

from detection_api.store.atomic import AtomicWriter


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
