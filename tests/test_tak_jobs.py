"""The job payload contract: written by ingest, read by the forwarder and the record API."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from redis import Redis
from rq.serializers import JSONSerializer
from rq.utils import utcformat, utcparse

from detection_api.store.atomic import AtomicWriter, json_command
from detection_api.store.tak_jobs import (
    DELIVER_FUNC,
    PAYLOAD_VERSION,
    VANISHED,
    Delivery,
    JobCall,
    PayloadRejected,
    cot_of,
    cots_of,
    enqueue_deliveries,
    job_ids_for,
    job_kwargs,
    parse_job_call,
    parse_payload,
    read_batch,
    read_job_calls,
    rq_timestamp,
    tak_queue,
)


def event(uid: str) -> str:
    return f"<event version='2.0' uid='{uid}' type='a-u-G' how='m-i'><point lat='1'/></event>"


def test_v3_carries_each_delivery_and_its_marker() -> None:
    kwargs = job_kwargs(
        [Delivery("r1", event("a"), 10.0, "detection:idem:x"), Delivery("r2", event("b"), 9.0)]
    )
    assert kwargs == {
        "v": PAYLOAD_VERSION,
        "accepted_at": 9.0,
        "deliveries": [
            {"record_id": "r1", "cot": event("a"), "idem": "detection:idem:x"},
            {"record_id": "r2", "cot": event("b")},
        ],
    }
    payloads = parse_payload(kwargs, job_id="r1", now=10.0, retention_seconds=60)
    assert [(p.record_id, p.idempotency, p.legacy) for p in payloads] == [
        ("r1", "detection:idem:x", False),
        ("r2", None, False),
    ]
    assert payloads[0].cot == event("a").encode()


def test_previous_versions_are_delivered_and_flagged_legacy() -> None:
    v2 = {"v": 2, "accepted_at": 1.0, "deliveries": [{"record_id": "r1", "cot": event("a")}]}
    v1 = {"v": 1, "accepted_at": 1.0, "record_id": "r1", "cot": event("a")}
    for kwargs in (v1, v2):
        [payload] = parse_payload(kwargs, job_id="r1", now=2.0, retention_seconds=60)
        assert payload.legacy


def test_a_newer_version_is_refused_with_its_reason() -> None:
    with pytest.raises(PayloadRejected, match="payload version 4 is newer"):
        parse_payload({"v": 4, "accepted_at": 1.0}, job_id="r1", now=2.0, retention_seconds=60)


def test_job_ids_follow_the_chunks_enqueue_writes() -> None:
    ids = [f"r{i}" for i in range(250)]
    jobs = job_ids_for(ids)
    assert jobs[0] == jobs[99] == "r0"
    assert jobs[100] == jobs[199] == "r100"
    assert jobs[249] == "r200"


def test_jobs_are_read_back_from_redis_and_their_cot_found_by_record(redis: Redis) -> None:
    writer = AtomicWriter(redis)
    recorder = writer.recorder()
    deliveries = [Delivery(f"r{i}", event(f"u{i}"), 1.0) for i in range(3)]
    enqueue_deliveries(tak_queue(redis), recorder, deliveries, per_job=100)
    assert writer.write_if_absent([], recorder) == []
    [call, missing] = read_job_calls(redis, ["r0", "nope"])
    assert missing is None
    assert call is not None and not isinstance(call, PayloadRejected)
    payloads = parse_job_call("r0", call, now=2.0, retention_seconds=60)
    assert [p.record_id for p in payloads] == ["r0", "r1", "r2"]
    assert cot_of(redis, "r0", "r2") == event("u2")
    assert cot_of(redis, "r0", "r9") is None
    assert cot_of(redis, "gone", "r2") is None


def test_cots_of_reads_each_job_once_in_one_round_trip(redis: Redis) -> None:
    """The CoT of many records (a redelivered list): one HGET per job, not one per record."""
    writer = AtomicWriter(redis)
    recorder = writer.recorder()
    deliveries = [Delivery(f"r{i}", event(f"u{i}"), 1.0) for i in range(5)]
    enqueue_deliveries(tak_queue(redis), recorder, deliveries, per_job=3)  # jobs r0 and r3
    assert writer.write_if_absent([], recorder) == []
    redis.config_resetstat()
    wanted = {"r0": "r0", "r2": "r0", "r4": "r3", "r9": "r3", "r5": "gone"}
    assert cots_of(redis, wanted) == {"r0": event("u0"), "r2": event("u2"), "r4": event("u4")}
    assert redis.info("commandstats")["cmdstat_hget"]["calls"] == 3  # r0, r3 and gone
    assert cots_of(redis, {}) == {}


def test_cots_of_skips_what_a_malformed_job_holds(redis: Redis) -> None:
    """A job edited by hand or written by a future version: ids that are not text (a list
    cannot even be looked up), CoT that is not text, items that are not objects."""
    items = [
        {"record_id": ["r1"], "cot": "<event/>"},
        {"record_id": {"id": "r1"}, "cot": "<event/>"},
        {"record_id": "r1", "cot": 7},
        "not an object",
        {"record_id": "r1", "cot": event("u1")},
    ]
    call = [DELIVER_FUNC, None, [], {"v": 3, "accepted_at": 1.0, "deliveries": items}]
    redis.hset("rq:job:j1", "data", zlib.compress(JSONSerializer.dumps(call)))
    assert cots_of(redis, {"r1": "j1", "r2": "j1"}) == {"r1": event("u1")}


def test_a_batch_reads_deliveries_and_names_what_can_never_be_delivered(redis: Redis) -> None:
    writer = AtomicWriter(redis)
    recorder = writer.recorder()
    queue = tak_queue(redis)
    enqueue_deliveries(queue, recorder, [Delivery("r1", event("u1"), 1.0)])
    enqueue_deliveries(queue, recorder, [Delivery("r2", "<event uid='x'/>", 1.0)])
    assert writer.write_if_absent([], recorder) == []
    redis.hset("rq:job:bad", "data", b"not zlib, not json")
    payloads, rejected = read_batch(
        redis, ["r1", "r2", "gone", "bad"], now=2.0, retention_seconds=60
    )
    assert [p.record_id for p in payloads] == ["r1"]
    assert rejected["r2"] == "CoT event lacks type, how"
    assert rejected["gone"] == VANISHED
    assert rejected["bad"].startswith("job payload cannot be decoded")


def test_jobs_written_directly_are_the_jobs_rq_enqueue_call_writes(redis: Redis) -> None:
    """enqueue_deliveries writes rq's job hash itself; it must be field for field what rq's
    ``enqueue_call`` with the same options writes, and rq must read and list it as its own."""
    queue = tak_queue(redis)
    deliveries = [Delivery(f"r{i}", event(f"u{i}"), 1.5, f"idem:{i}") for i in range(3)]
    with redis.pipeline() as pipe:
        assert enqueue_deliveries(queue, pipe, deliveries, per_job=2) == ["r0", "r2"]
        pipe.execute()
    queue.enqueue_call(
        DELIVER_FUNC,
        kwargs=job_kwargs(deliveries[:2]),
        job_id="by-rq",
        result_ttl=0,
        failure_ttl=None,
        ttl=None,
        timeout=60,
        description="deliver 2 detection(s) to TAK",
    )
    ours, rqs = redis.hgetall("rq:job:r0"), redis.hgetall("rq:job:by-rq")
    # The same call for rq's reader; compact JSON (orjson), so no larger than rq's
    assert JSONSerializer.loads(zlib.decompress(ours[b"data"])) == JSONSerializer.loads(
        zlib.decompress(rqs[b"data"])
    )
    assert len(ours[b"data"]) <= len(rqs[b"data"])
    stamps = {b"created_at", b"enqueued_at", b"data"}
    assert {k: v for k, v in ours.items() if k not in stamps} == {
        k: v for k, v in rqs.items() if k not in stamps
    }
    assert ours.keys() == rqs.keys()
    assert queue.job_ids == ["r0", "r2", "by-rq"]
    assert redis.smembers("rq:queues") == {b"rq:queue:tak"}
    job = queue.fetch_job("r2")
    assert job is not None and job.get_status() == "queued"
    assert job.func_name == DELIVER_FUNC and job.timeout == 60 and job.result_ttl == 0
    assert job.kwargs == job_kwargs(deliveries[2:])
    assert job.enqueued_at is not None and job.created_at is not None


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 4, 18, 0, 0, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 12, 4, 18, 0, 0, 1, tzinfo=UTC),
        datetime(1999, 1, 2, 3, 4, 5, 999999, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_job_stamps_are_rqs_own_text(moment: datetime) -> None:
    assert rq_timestamp(moment) == utcformat(moment.astimezone(UTC))
    assert utcparse(rq_timestamp(moment)) == moment


@pytest.mark.parametrize("count", [2, 12, 100])
def test_job_data_is_compressed_nearly_as_small_as_rq_compresses_it(
    redis: Redis, count: int
) -> None:
    """Jobs are compressed at zlib's level 1 (half the time of rq's level 6 for a full job) and
    small ones with a smaller match table (cheaper to set up); the bytes must stay within 12% of
    rq's own ``zlib.compress`` of the same call, from two deliveries to a full job."""
    deliveries = [
        Delivery(f"{i:032x}", event(f"detection-api.{i:032x}"), 1.5 + i, f"idem:{i}")
        for i in range(count)
    ]
    with redis.pipeline() as pipe:
        enqueue_deliveries(tak_queue(redis), pipe, deliveries, per_job=count)
        pipe.execute()
    data = redis.hget(f"rq:job:{0:032x}", "data")
    assert data is not None
    raw = zlib.decompress(data)
    assert len(data) <= 1.12 * len(zlib.compress(raw))


def test_a_job_of_one_delivery_keeps_its_call_as_json_text_that_rq_reads(redis: Redis) -> None:
    """One delivery: the call's JSON text, uncompressed (zlib's set-up cost more than the bytes
    it saved). rq and the forwarder's reader both take it, the whole HSET travels as one JSON
    command through the ingest write, and Redis (``hash-max-listpack-value`` 2048, as
    local/redis_server.py and the manifests set it) keeps the job hash a listpack."""
    job_id = f"{7:032x}"
    delivery = Delivery(job_id, event(f"detection-api.{job_id}") * 8, 1.5, "idem:7")
    queue = tak_queue(redis)
    writer = AtomicWriter(redis)
    recorder = writer.recorder()
    enqueue_deliveries(queue, recorder, [delivery])
    hset = next(args for args, _ in recorder.command_stack if args[0] == "HSET")
    # all text (json_command's fast path, which only joins them): one argument of the script
    assert all(type(arg) is str for arg in hset) and json_command(hset) is not None
    assert writer.write_if_absent([], recorder) == []

    kwargs = job_kwargs([delivery])
    data = redis.hget(f"rq:job:{job_id}", "data")
    assert data is not None and data.startswith(b'["detection_api.tak.jobs.deliver_cot",')
    assert JSONSerializer.loads(data) == [DELIVER_FUNC, None, [], kwargs]
    job = queue.fetch_job(job_id)
    assert job is not None and job.kwargs == kwargs and job.func_name == DELIVER_FUNC
    assert read_job_calls(redis, [job_id]) == [JobCall(DELIVER_FUNC, kwargs)]
    assert redis.object("encoding", f"rq:job:{job_id}") in (b"listpack", b"ziplist")
