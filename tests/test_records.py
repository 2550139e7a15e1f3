"""Record ids and idempotency markers (issue 10), against a real Redis server."""

from __future__ import annotations

from redis import Redis

from detection_api.store.atomic import AtomicWriter
from detection_api.store.records import (
    IDEMPOTENCY_PREFIX,
    MARK_CHUNK,
    DeliveryState,
    RecordStore,
    idempotency_key,
    new_record_id,
    record_key,
)

RETENTION = 86_400


def test_record_ids_are_random_and_valid_job_ids() -> None:
    ids = {new_record_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and i.isalnum() for i in ids)


def test_idempotency_keys_are_scoped_and_cannot_be_forged_by_joining_parts() -> None:
    key = idempotency_key("sub:a", "v1", "cam-1", "42")
    assert key.startswith(IDEMPOTENCY_PREFIX) and len(key) == len(IDEMPOTENCY_PREFIX) + 64
    assert key == idempotency_key("sub:a", "v1", "cam-1", "42")
    assert key != idempotency_key("sub:b", "v1", "cam-1", "42")  # another producer
    assert key != idempotency_key("sub:a", "v1", "cam-2", "42")  # another camera
    # Separators inside ids cannot make two identities meet.
    assert idempotency_key("a\x1fb", "c") != idempotency_key("a", "b\x1fc")
    assert idempotency_key("ab", "c") != idempotency_key("a", "bc")


def _write(redis: Redis, store: RecordStore, record_id: str, marker: str) -> list[int]:
    writer = AtomicWriter(redis)
    recorder = writer.recorder()
    store.write_new(recorder, record_id, {"state": "queued"}, idempotency=marker)
    return writer.write_if_absent([marker], recorder)


def test_the_marker_guards_the_write_and_names_the_record(redis: Redis) -> None:
    store = RecordStore(redis, RETENTION)
    marker = idempotency_key("sub:a", "ce", "/s", "1")
    assert _write(redis, store, "r1", marker) == []
    assert _write(redis, store, "r2", marker) == [0]  # a redelivery writes nothing
    assert redis.get(marker) == b"r1"
    assert not redis.exists(record_key("r2"))
    assert 0 < redis.ttl(marker) <= RETENTION


def test_confirmation_keeps_the_marker_for_retention_and_the_record_shorter(redis: Redis) -> None:
    store = RecordStore(redis, RETENTION)
    marker = idempotency_key("sub:a", "ce", "/s", "1")
    _write(redis, store, "r1", marker)
    redis.expire(marker, 100)  # (as if most of the window had passed before confirmation)
    store.mark(redis, ["r1"], DeliveryState.SENT)
    assert redis.ttl(marker) <= 100  # only confirmation restarts the window
    store.mark(redis, ["r1"], DeliveryState.CONFIRMED, ttl_seconds=60)
    assert RETENTION - 5 < redis.ttl(marker) <= RETENTION
    assert 0 < redis.ttl(record_key("r1")) <= 60
    assert redis.memory_usage(marker) < 200  # small: what outlives the record is this marker


def test_marking_a_large_batch_never_holds_redis_for_50_ms(redis: Redis) -> None:
    """The forwarder marks up to FORWARDER_BATCH_SIZE (5000) records at once: in chunks, so no
    single script call blocks Redis long (Redis's own SLOWLOG times each call)."""
    store = RecordStore(redis, RETENTION)
    ids = [f"r{i}" for i in range(5000)]
    writer = AtomicWriter(redis)
    recorder = writer.recorder()
    for i, record_id in enumerate(ids):
        store.write_new(recorder, record_id, {"state": "sent"}, idempotency=f"m{i}")
    assert writer.write_if_absent([], recorder) == []
    redis.config_set("slowlog-log-slower-than", 0)  # every command, with its duration
    redis.config_set("slowlog-max-len", 100_000)  # (commands inside scripts are logged too)
    redis.slowlog_reset()
    with redis.pipeline(transaction=True) as pipe:
        store.mark(pipe, ids, DeliveryState.CONFIRMED, ttl_seconds=60)
        pipe.execute()
    calls = [e for e in redis.slowlog_get(100_000) if e["command"].startswith(b"EVALSHA")]
    assert len(calls) == 5000 // MARK_CHUNK
    assert max(e["duration"] for e in calls) < 50_000  # microseconds
    assert all(redis.ttl(f"m{i}") > RETENTION - 5 for i in (0, 2500, 4999))
