"""The audit trail: one global entry per batch, each record's trail derived from the record plus
its exceptional events (real Redis server)."""

from __future__ import annotations

from redis import Redis

from detection_api.store.audit import AUDIT_STREAM, AuditEvent, AuditLog, trail_key
from detection_api.store.records import DeliveryState, RecordStore, record_key

RETENTION = 3600


def _write(redis: Redis, record_id: str, fields: dict[str, object], now: float) -> None:
    with redis.pipeline(transaction=True) as pipe:
        RecordStore(redis, RETENTION).write_new(pipe, record_id, fields, now=now)  # type: ignore[arg-type]
        pipe.execute()


def test_one_global_entry_per_request_and_no_per_record_writes(redis: Redis) -> None:
    audit = AuditLog(redis, max_len=1000, retention_seconds=RETENTION)
    audit.append_accepted(redis, ["a", "b", "c"], filtered_ids=["c"], now=10.0)
    [(_, entry)] = redis.xrange(AUDIT_STREAM)
    assert entry[b"event"] == b"received"
    assert (entry[b"count"], entry[b"record_ids"], entry[b"filtered_ids"]) == (b"3", b"a,b,c", b"c")
    assert not redis.exists(trail_key("a"))


def test_the_stream_is_capped_near_its_max_len(redis: Redis) -> None:
    audit = AuditLog(redis, max_len=10, retention_seconds=RETENTION)
    with redis.pipeline(transaction=False) as pipe:
        for i in range(600):
            audit.append_accepted(pipe, [f"r{i}"], now=float(i))
            audit.append(pipe, AuditEvent.REJECTED, reason="bad", now=float(i))
        pipe.execute()
    # "~": Redis trims whole stream nodes (100 entries each by default), never below the cap
    assert 10 <= redis.xlen(AUDIT_STREAM) <= 10 + 100
    [(_, last)] = redis.xrevrange(AUDIT_STREAM, count=1)
    assert last[b"event"] == b"rejected"


def test_the_ordinary_life_is_derived_from_the_record(redis: Redis) -> None:
    audit = AuditLog(redis, max_len=1000, retention_seconds=RETENTION)
    _write(redis, "r1", {"state": "queued", "detection_id": "d-1", "event_id": "e-1"}, 100.0)
    store = RecordStore(redis, RETENTION)
    store.mark_sent(redis, ["r1"], now=101.0)
    store.mark_confirmed(redis, ["r1"], [], now=102.0, ttl_seconds=60)
    audit.append_batch(redis, AuditEvent.CONFIRMED, ["r1"], now=102.0, trail_ids=[])
    events = audit.events_for("r1")
    assert [(e["event"], e["at"]) for e in events] == [
        ("received", 100.0),
        ("queued", 100.0),
        ("confirmed", 102.0),
    ]
    assert events[0] == {
        "event": "received",
        "at": 100.0,
        "record_id": "r1",
        "detection_id": "d-1",
        "event_id": "e-1",
    }
    assert not redis.exists(trail_key("r1"))  # nothing stored per record for all of that


def test_filtered_records_say_why(redis: Redis) -> None:
    audit = AuditLog(redis, max_len=1000, retention_seconds=RETENTION)
    _write(redis, "f1", {"state": "filtered", "filter_reason": "low confidence"}, 5.0)
    events = audit.events_for("f1")
    assert [e["event"] for e in events] == ["received", "filtered"]
    assert events[1]["reason"] == "low confidence"


def test_exceptional_events_are_kept_and_merged_in_time_order(redis: Redis) -> None:
    audit = AuditLog(redis, max_len=1000, retention_seconds=RETENTION)
    _write(redis, "r1", {"state": "queued"}, 100.0)
    store = RecordStore(redis, RETENTION)
    audit.append_batch(redis, AuditEvent.RETRIED, ["r1"], reason="no pong", now=110.0)
    audit.append_batch(redis, AuditEvent.DEAD_LETTERED, ["r1"], reason="out of attempts", now=120)
    audit.append_batch(redis, AuditEvent.REQUEUED, ["r1"], reason="operator requeue", now=130.0)
    store.mark_confirmed(redis, ["r1"], [], now=140.0, ttl_seconds=60)
    events = audit.events_for("r1")
    assert [e["event"] for e in events] == [
        "received",
        "queued",
        "retried",
        "dead_lettered",
        "requeued",
        "confirmed",
    ]
    assert events[2]["reason"] == "no pong"
    assert 0 < redis.ttl(trail_key("r1")) <= RETENTION


def test_records_of_earlier_versions_keep_their_stored_trail(redis: Redis) -> None:
    audit = AuditLog(redis, max_len=1000, retention_seconds=RETENTION)
    redis.hset(record_key("old"), mapping={"id": "old", "state": "queued", "created_at": "1.0"})
    redis.rpush(
        trail_key("old"), '{"event":"received","at":"1.0"}', '{"event":"queued","at":"1.0"}'
    )
    RecordStore(redis, RETENTION).mark(redis, ["old"], DeliveryState.CONFIRMED, now=2.0)
    audit.append_batch(redis, AuditEvent.CONFIRMED, ["old"], now=2.0, trail_ids=["old"])
    assert [e["event"] for e in audit.events_for("old")] == ["received", "queued", "confirmed"]


def test_rejections_name_the_detection_in_the_global_stream(redis: Redis) -> None:
    audit = AuditLog(redis, max_len=1000, retention_seconds=RETENTION)
    audit.append(redis, AuditEvent.REJECTED, detection_id="bad-1", reason="validation: x")
    [(_, entry)] = redis.xrange(AUDIT_STREAM)
    assert (entry[b"event"], entry[b"detection_id"]) == (b"rejected", b"bad-1")
