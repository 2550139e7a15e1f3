"""Record ids and idempotency markers (issue 10), against a real Redis server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import Redis

from detection_api.store.atomic import AtomicWriter
from detection_api.store.record_fields import (
    GEO_KEYS,
    decode_geolocation,
    encode_fields,
    encode_geolocation,
    encode_new,
    new_record,
)
from detection_api.store.records import (
    IDEMPOTENCY_PREFIX,
    MARK_CHUNK,
    DeliveryState,
    RecordStore,
    idempotency_key,
    new_record_ids,
    record_key,
)

RETENTION = 86_400


def test_record_ids_are_random_and_valid_job_ids() -> None:
    ids = set(new_record_ids(1000)) | set(new_record_ids(1)) | set(new_record_ids(1))
    assert len(ids) == 1002
    assert all(len(i) == 32 and all(c in "0123456789abcdef" for c in i) for i in ids)
    assert new_record_ids(0) == []


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
    store.mark_sent(redis, ["r1"], now=1000.0)
    assert redis.ttl(marker) <= 100  # only confirmation restarts the window
    store.mark_confirmed(redis, ["r1"], [marker], now=1001.0, ttl_seconds=60)
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
        store.mark_confirmed(pipe, ids, [f"m{i}" for i in range(5000)], now=1000.0, ttl_seconds=60)
        pipe.execute()
    calls = [e for e in redis.slowlog_get(100_000) if e["command"].startswith(b"EVALSHA")]
    assert len(calls) == 5000 // MARK_CHUNK
    assert max(e["duration"] for e in calls) < 50_000  # microseconds
    assert all(redis.ttl(f"m{i}") > RETENTION - 5 for i in (0, 2500, 4999))


# --- the compact encoding ----------------------------------------------------------------------

GEO = {
    "lat": 51.217548739, "lon": -1.804237574, "hae_m": 177.0, "slant_range_m": 176.994,
    "ground_distance_m": 130.099, "ce90_m": 12.218, "le90_m": 4.935, "ce_m": 5.693, "le_m": 3.0,
    "flag": "GREEN", "covariance_en_m2": [31.7742, -5.31119, 32.9124], "terrain": "flat",
}  # fmt: skip
FIELDS = {
    "state": "queued", "detection_id": "drone-7-000142", "uid": "detection-api.x.track.7",
    "cot_type": "a-u-G-E-V", "object_class": "vehicle", "ai_confidence": "0.91",
    "camera_id": "drone-7-gimbal", "track_id": "7", "source": "urn:detection-api:drone-7",
    "event_source": "/drones/7", "event_id": "e-42", "producer": "sub:bench",
    "geolocation": GEO, "job_id": "j1",
}  # fmt: skip


def _store(redis: Redis, store: RecordStore, record_id: str, fields: dict[str, object]) -> None:
    with redis.pipeline(transaction=True) as pipe:
        store.write_new(pipe, record_id, fields, now=1000.5)  # type: ignore[arg-type]
        pipe.execute()


def test_a_record_reads_back_as_written_and_stays_listpack_encoded(redis: Redis) -> None:
    """Every value at most 64 bytes (longer ones in pieces), so Redis keeps the hash as one
    listpack: a hashtable would take about three times the memory."""
    store = RecordStore(redis, RETENTION)
    long_reason = "é" * 40 + "x" * 200  # non-ASCII and longer than a listpack value
    _store(redis, store, "r1", {**FIELDS, "filter_reason": long_reason})
    assert redis.object("encoding", record_key("r1")) in (b"listpack", b"ziplist")
    record = store.get("r1")
    assert record is not None
    expected = {k: v for k, v in FIELDS.items() if k != "job_id"}
    assert {k: record[k] for k in expected} == expected
    assert record["filter_reason"] == long_reason
    assert (record["id"], record["attempts"], record["created_at"]) == ("r1", 0, 1000.5)
    assert record["updated_at"] == 1000.5
    assert redis.memory_usage(record_key("r1")) < 1000  # as a hashtable: over 2,000


def test_values_that_follow_from_the_id_are_not_stored(redis: Redis) -> None:
    store = RecordStore(redis, RETENTION)
    fields = {"state": "queued", "detection_id": "r1", "uid": "detection-api.r1", "job_id": "r1"}
    _store(redis, store, "r1", fields)
    assert set(redis.hkeys(record_key("r1"))) == {b"state", b"ca", b"id"}
    record = store.get("r1")
    assert record is not None
    assert (record["detection_id"], record["uid"]) == ("r1", "detection-api.r1")


def _calls(redis: Redis) -> int:
    stats = redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def test_the_hot_path_costs_one_command_to_send_and_three_to_confirm(redis: Redis) -> None:
    """Commands inside scripts count (INFO commandstats), plus one EVALSHA per chunk."""
    store = RecordStore(redis, RETENTION)
    ids = [f"r{i}" for i in range(100)]
    for record_id in ids:
        _store(redis, store, record_id, {"state": "queued", "job_id": "j1"})
    store.mark_sent(redis, ids, now=1001.0)  # (loads the scripts once)
    store.mark_confirmed(redis, [], ["m0"], now=1001.0, ttl_seconds=60)
    before = _calls(redis)
    store.mark_sent(redis, ids, now=1002.0)
    assert _calls(redis) - before == 1 + 100  # EVALSHA + one HSET each
    before = _calls(redis)
    store.mark_confirmed(redis, ids, ["m1"], now=1003.0, ttl_seconds=60)
    assert _calls(redis) - before == 1 + 3 * 100 + 1  # HSET, HDEL, EXPIRE each; the marker
    record = store.get("r7")
    assert record is not None
    assert (record["state"], record["sent_at"], record["confirmed_at"]) == (
        "confirmed",
        1002.0,
        1003.0,
    )
    assert not redis.hexists(record_key("r7"), "j")  # the job is gone: so is the pointer
    assert 0 < redis.ttl(record_key("r7")) <= 60


def test_the_hot_path_never_resurrects_an_expired_record(redis: Redis) -> None:
    store = RecordStore(redis, RETENTION)
    store.mark_sent(redis, ["gone"], now=1.0)
    store.mark_confirmed(redis, ["gone"], [], now=2.0, ttl_seconds=60)
    store.mark(redis, ["gone"], DeliveryState.DEAD, error="x")
    assert not redis.exists(record_key("gone"))


def test_the_general_path_counts_attempts_and_errors(redis: Redis) -> None:
    store = RecordStore(redis, RETENTION)
    _store(redis, store, "r1", {"state": "queued"})
    store.mark(
        redis, ["r1"], DeliveryState.RETRYING, count_attempt=True, error="no pong", now=1005.0
    )
    record = store.get("r1")
    assert record is not None
    assert (record["state"], record["attempts"], record["last_error"]) == (
        "retrying",
        1,
        "no pong",
    )
    assert record["updated_at"] == 1005.0


def test_records_of_earlier_versions_are_read_and_marked_with_their_own_names(
    redis: Redis,
) -> None:
    """A v2 job's record (long field names, its marker named inside) during a traffic split."""
    store = RecordStore(redis, RETENTION)
    redis.hset(
        record_key("old"),
        mapping={
            "id": "old",
            "state": "queued",
            "cot": "<event/>",
            "attempts": "0",
            "created_at": "10.5",
            "geolocation": '{"lat": 1.0}',
            "idem": "detection:idem:old",
        },
    )
    redis.set("detection:idem:old", "old", ex=100)
    store.mark(redis, ["old"], DeliveryState.SENT, now=11.0)
    store.mark(redis, ["old"], DeliveryState.CONFIRMED, now=12.0, ttl_seconds=60)
    record = store.get("old")
    assert record is not None
    assert record["state"] == "confirmed"
    assert (record["first_sent_at"], record["confirmed_at"]) == (11.0, 12.0)
    assert record["geolocation"] == {"lat": 1.0}
    assert record["cot"] == "<event/>"
    assert "idem" not in record
    assert not redis.hexists(record_key("old"), "ka")  # no compact field mixed in
    assert redis.ttl("detection:idem:old") > RETENTION - 5


def test_long_values_split_into_pieces_at_the_listpack_limit() -> None:
    """At most 64 characters of ASCII, or 16 of anything (4 bytes each at most), per piece."""

    def pieces(value: str) -> list[str]:
        encoded = encode_fields({"filter_reason": value}, record_id="r1", created_at=1.0)
        return [k for k in encoded[::2] if k.startswith("f")]

    assert pieces("x" * 64) == ["f"]
    assert pieces("x" * 65) == ["f", "f~1"]
    assert pieces("é" * 16) == ["f"]
    assert pieces("é" * 17) == ["f", "f~1"]
    assert pieces("😀" * 33) == ["f", "f~1", "f~2"]


@pytest.mark.parametrize(
    "geolocation",
    [
        {"lat": 1.5, "lon": -2.25, "hae_m": 3.0, "flag": "GREEN"},  # keys out of GEO_KEYS order
        dict(zip(GEO_KEYS[:12], range(12), strict=True)),  # core's dict, flat ground
        dict(zip(GEO_KEYS, range(14), strict=True)),  # on a DEM, with a note
        {**dict(zip(GEO_KEYS[:12], range(12), strict=True)), "terrain_note": "outside_dem"},
        {**dict(zip(GEO_KEYS[:12], range(12), strict=True)), "dem": None},
        {**dict(zip(GEO_KEYS[:12], range(12), strict=True)), "future_key": [1, "é"]},
    ],
)
def test_geolocations_are_stored_positionally_and_read_back_whole(
    geolocation: dict[str, Any],
) -> None:
    """Core's own dicts (GEO_KEYS in order) take the short way; any other shape the general one:
    both store GEO_KEYS positions, trailing absences dropped, other keys in a dict at the end."""
    positional = [geolocation.get(k) for k in GEO_KEYS]
    while positional and positional[-1] is None:
        positional.pop()
    extra = {k: v for k, v in geolocation.items() if k not in GEO_KEYS}
    expected = positional + ([extra] if extra else [])
    text = encode_geolocation(geolocation)
    assert json.loads(text) == expected
    assert decode_geolocation(text) == {k: v for k, v in geolocation.items() if v is not None}


_ANY_TEXT = st.text(min_size=0, max_size=120)  # ASCII or not, shorter and longer than a piece
_OPTIONAL = st.none() | _ANY_TEXT


@given(
    detection_id=st.none() | _ANY_TEXT,
    uid=st.none() | _ANY_TEXT,
    job_id=st.none() | st.just("") | _ANY_TEXT,
    cot=_OPTIONAL,
    camera_id=_OPTIONAL,
    track_id=_OPTIONAL,
    source=_OPTIONAL,
    event_source=_OPTIONAL,
    event_id=_OPTIONAL,
    filter_reason=_OPTIONAL,
    producer=_ANY_TEXT,
    ai_confidence=st.floats(0.0, 1.0),
    captured_at=st.floats(0.0, 2e9),
)
def test_ingest_records_encode_as_the_general_encoding(
    detection_id: str | None,
    uid: str | None,
    job_id: str | None,
    cot: str | None,
    camera_id: str | None,
    track_id: str | None,
    source: str | None,
    event_source: str | None,
    event_id: str | None,
    filter_reason: str | None,
    producer: str,
    ai_confidence: float,
    captured_at: float,
) -> None:
    """``new_record`` + ``encode_new`` (ingest's one step) give exactly the hash, field order
    included, that ``encode_fields`` gives for the same fields by their API names: the default
    ids left out (None here: the record's own id or uid), long values in the same pieces."""
    record_id = "5d41402abc4b2a76b9719d911017c592"
    default_uid = f"detection-api.{record_id}"
    fields: dict[str, Any] = {
        "state": "filtered",
        "detection_id": record_id if detection_id is None else detection_id,
        "uid": default_uid if uid is None else uid,
        "cot_type": "a-u-G",
        "cot": cot,
        "object_class": "véhicule",
        "ai_confidence": repr(ai_confidence),
        "camera_id": camera_id,
        "track_id": track_id,
        "source": source,
        "event_source": event_source,
        "event_id": event_id,
        "producer": producer,
        "filter_reason": filter_reason,
        "geolocation": dict(zip(GEO_KEYS[:12], range(12), strict=True)),
        "captured_at": captured_at,
    }
    record = new_record(
        record_id=record_id,
        state=DeliveryState.FILTERED,
        detection_id=fields["detection_id"],
        uid=fields["uid"],
        cot_type="a-u-G",
        cot=cot,
        object_class="véhicule",
        ai_confidence=ai_confidence,
        camera_id=camera_id,
        track_id=track_id,
        source=source,
        event_source=event_source,
        event_id=event_id,
        producer=producer,
        filter_reason=filter_reason,
        geolocation=fields["geolocation"],
        captured_at=captured_at,
    )
    record.job_id = record_id if job_id is None else job_id
    fields["job_id"] = record.job_id
    created_at = 2_000_000_000.25
    pairs = encode_new(record, record_id=record_id, created_at=created_at)
    general = encode_fields(fields, record_id=record_id, created_at=created_at)
    assert pairs == general
