"""Many producers on one deployment, some of them hostile: the real function on a real Redis.

Two tokens (two producers), two cameras that both number detections from 1, forged ids, replayed
events, huge attributes, ten times the detection cap, floods of bad tokens, Broker dead letters
and mistyped settings. What must hold: nothing lost, nothing taken over, no 5xx, and Redis never
blocked more than 50 ms by one request (Redis's own SLOWLOG, every command logged).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jwt
import pytest
from cloudevents.conversion import to_binary, to_structured
from http_client import Reply, post_json, request
from product import REPO, function_argv, start_function
from rq.job import Job
from rq.serializers import JSONSerializer
from test_function_http import assert_problem, detection, event

from detection_api.local.ports import free_port
from detection_api.store.records import RecordStore, record_key
from detection_api.store.tak_jobs import read_job_calls
from test_record_event import assert_same_event

SECRET = "hostile-producers-test-secret-" + "x" * 16  # made up for this test, never a real key
V1 = "/api/v1/detections"
JSON_ACCEPT = {"Accept": "application/json"}
BATCH = "application/cloudevents-batch+json"


def bearer(sub: str, scope: str = "detections:write detections:read") -> dict[str, str]:
    # Minted at import: a day, so a slow suite never reaches a file with its tokens expired.
    claims = {"sub": sub, "scope": scope, "exp": int(time.time()) + 86_400}
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


TEAM_A = bearer("team-a")
TEAM_B = bearer("team-b")


@pytest.fixture
def product(redis_server, start_process):
    """Start the function with the test's JWT secret; returns ``start(**env) -> base URL``."""

    def start(**env: str) -> str:
        base = {
            "REDIS_URL": redis_server.url,
            "JWT_SECRET_KEY": SECRET,
            "RATE_LIMIT": "10000/second",
        }
        return start_function(start_process, {**base, **env}, name=f"function-{free_port()}")

    return start


@pytest.fixture
def url(product) -> str:
    return product()


def queued_record_ids(redis) -> list[str]:
    """Record ids of every delivery waiting on queue tak (the jobs' own payloads)."""
    ids = []
    for job_id in redis.lrange("rq:queue:tak", 0, -1):
        job = Job.fetch(job_id.decode(), connection=redis, serializer=JSONSerializer)
        ids.extend(d["record_id"] for d in job.kwargs["deliveries"])
    return ids


def v1(url: str, payload: Any, headers: dict[str, str]) -> Reply:
    return post_json(url, V1, payload, **headers, **JSON_ACCEPT)


def structured(url: str, ev: Any, headers: dict[str, str]) -> Reply:
    ce_headers, body = to_structured(ev)
    return request(url, "POST", "/", body, {**dict(ce_headers), **headers})


def no_5xx(*replies: Reply) -> None:
    for reply in replies:
        assert reply.status < 500, reply.body


# -- identity: nothing lost, nothing taken over ------------------------------------------------


def test_two_cameras_numbering_from_one_are_both_delivered(url, redis_server):
    north = detection(detection_id="000042", camera_id="cam-north")
    south = detection(
        detection_id="000042", camera_id="cam-south", sensor_metadata={"heading": 10.0}
    )
    first, second = v1(url, north, TEAM_A), v1(url, south, TEAM_A)
    assert first.status == second.status == 201, (first.body, second.body)
    assert "duplicate" not in second.json
    assert first.json["id"] != second.json["id"]
    assert first.json["geolocation"]["lat"] != second.json["geolocation"]["lat"]
    assert sorted(queued_record_ids(redis_server.client())) == sorted(
        [first.json["id"], second.json["id"]]
    )


def test_another_producer_cannot_preempt_a_v1_detection(url, redis_server):
    real = detection(detection_id="000042", camera_id="cam-north")
    forged = detection(
        detection_id="000042", camera_id="cam-north", sensor_metadata={"heading": 300.0}
    )
    attack = v1(url, forged, TEAM_B)  # B goes first, with A's ids and a false position
    genuine = v1(url, real, TEAM_A)
    assert attack.status == genuine.status == 201
    assert "duplicate" not in genuine.json
    assert genuine.json["geolocation"]["lat"] != attack.json["geolocation"]["lat"]
    stored = RecordStore(redis_server.client(), 86_400).get(genuine.json["id"])
    assert stored["geolocation"] == genuine.json["geolocation"]
    assert stored["producer"] == "sub:team-a"
    assert len(queued_record_ids(redis_server.client())) == 2


def test_another_producer_cannot_preempt_a_cloudevent(url, redis_server):
    forged = event(detection(sensor_metadata={"heading": 300.0}), "ev-7", "/cams/north")
    real = event(detection(), "ev-7", "/cams/north")
    attack, genuine = structured(url, forged, TEAM_B), structured(url, real, TEAM_A)
    assert attack.status == genuine.status == 200, (attack.body, genuine.body)
    assert "duplicate" not in genuine.json
    assert genuine.json["geolocation"]["lat"] != attack.json["geolocation"]["lat"]
    assert len(queued_record_ids(redis_server.client())) == 2


def test_the_same_producer_resending_is_a_duplicate(url, redis_server):
    det = detection(detection_id="000042", camera_id="cam-north")
    first, again = v1(url, det, TEAM_A), v1(url, det, TEAM_A)
    assert again.status == 201 and again.json["duplicate"] is True
    assert again.json["id"] == first.json["id"]
    ev = event(detection(), "ev-9", "/cams/north")
    numbered = detection(detection_id=42, camera_id=7)  # integer ids, as trackers send them
    assert v1(url, numbered, TEAM_A).json["id"] == v1(url, numbered, TEAM_A).json["id"]
    ce_first, ce_again = structured(url, ev, TEAM_A), structured(url, ev, TEAM_A)
    assert ce_again.json["duplicate"] is True and ce_again.json["id"] == ce_first.json["id"]
    assert len(queued_record_ids(redis_server.client())) == 3  # one per detection, not six


def test_records_are_unguessable_and_read_only_by_their_producer(url):
    created = v1(url, detection(detection_id="000001", camera_id="cam-a"), TEAM_A).json
    record_id = created["id"]
    path = f"{V1}/{record_id}"
    own = request(url, "GET", path, headers=bearer("team-a", "detections:read"))
    assert own.status == 200 and own.json["id"] == record_id
    assert "idem" not in own.json
    for other in (bearer("team-b", "detections:read"), TEAM_B):
        assert_problem(request(url, "GET", path, headers=other), 404)
        assert_problem(request(url, "GET", f"{path}/events", headers=other), 404)
    for everything in (bearer("ops", "detections:read-all"), bearer("ops", "admin")):
        assert request(url, "GET", path, headers=everything).status == 200
    # Random, not derived from public inputs: the same detection by another producer gets
    # another id, and so does the next one of the same producer.
    again = v1(url, detection(detection_id="000001", camera_id="cam-a"), TEAM_B).json
    assert again["id"] != record_id and len(record_id) == 32


def test_a_producer_cannot_move_another_producers_track(url):
    tracked = detection(camera_id="cam-north", track_id="17")
    mine = v1(url, tracked, TEAM_A).json
    theirs = v1(url, tracked, TEAM_B).json
    assert mine["uid"] != theirs["uid"]
    assert mine["uid"].endswith(".cam-north.track.17")
    assert v1(url, tracked, TEAM_A).json["uid"] == mine["uid"]  # my marker still moves


def test_the_same_id_twice_in_one_request_is_a_400_and_stores_nothing(url, redis_server):
    twice = [
        detection(detection_id="d-1", camera_id="c"),
        detection(detection_id="d-1", camera_id="c"),
    ]
    body = assert_problem(v1(url, twice, TEAM_A), 400)
    assert body["errors"] == [
        {"path": "[1].detection_id", "message": "repeats [0] in this request"}
    ]
    events = [json.loads(to_structured(event(detection(), "same", "/s"))[1]) for _ in range(2)]
    reply = request(
        url, "POST", "/", json.dumps(events).encode(), {"Content-Type": BATCH, **TEAM_A}
    )
    assert assert_problem(reply, 400)["errors"][0]["path"] == "[1].id"
    assert redis_server.client().llen("rq:queue:tak") == 0


def confirm_as_the_forwarder_does(redis, job_id: str, ttl_seconds: int = 600) -> list[str]:
    """Mark a job's records confirmed (each kept ``ttl_seconds``, its idempotency marker
    RETENTION_SECONDS from now: the marker's key travels in the job) and delete the job with the
    CoT it carried. Returns the markers."""
    [call] = read_job_calls(redis, [job_id])
    deliveries = call.kwargs["deliveries"]  # type: ignore[union-attr]
    RecordStore(redis, 86_400).mark_confirmed(
        redis,
        [d["record_id"] for d in deliveries],
        [d["idem"] for d in deliveries],
        now=time.time(),
        ttl_seconds=ttl_seconds,
    )
    redis.delete(Job.key_for(job_id), "rq:queue:tak")
    return [d["idem"] for d in deliveries]


def test_a_duplicate_is_caught_for_retention_after_confirmation(url, redis_server):
    redis = redis_server.client()
    det = detection(detection_id="000042", camera_id="cam-north")
    first = v1(url, det, TEAM_A).json
    # Confirmed: the record is kept CONFIRMED_RETENTION_SECONDS, the marker RETENTION_SECONDS
    # from now. Then the record expires (deleted here): only the marker is left.
    [marker] = confirm_as_the_forwarder_does(redis, first["id"], ttl_seconds=60)
    assert 86_000 < redis.ttl(marker) <= 86_400
    assert 0 < redis.ttl(record_key(first["id"])) <= 60
    redis.delete(record_key(first["id"]))
    again = v1(url, det, TEAM_A)
    assert again.status == 201 and again.json["duplicate"] is True
    assert again.json["id"] == first["id"] and again.json["detection_id"] == "000042"
    assert redis.llen("rq:queue:tak") == 0  # not delivered twice
    assert redis.memory_usage(marker) < 200  # a small marker, not the record


def test_a_confirmed_detection_redelivered_gets_its_event_rebuilt(url, redis_server):
    """A producer that retries after the forwarder confirmed (and the CoT was dropped) still gets
    the event it asks for: v1 XML for one or in a list's ``<events>``, a CloudEvent reply's cot."""
    redis = redis_server.client()
    dets = [
        detection(detection_id=f"00007{i}", camera_id="cam-e", track_id=f"t{i}") for i in (0, 1)
    ]
    body = json.dumps(dets).encode()
    wants_xml = {"Content-Type": "application/json", **TEAM_A}  # no Accept: the v1 default
    sent = request(url, "POST", V1, body, wants_xml)
    assert sent.status == 201, sent.body
    originals = [ET.tostring(e, encoding="unicode") for e in ET.fromstring(sent.body)]
    ids = [ET.fromstring(o).find("detail/*[@record]").get("record") for o in originals]
    ce = event(detection(), "ev-confirmed", "/cams/east")
    first_reply = structured(url, ce, TEAM_A).json
    confirm_as_the_forwarder_does(redis, ids[0])  # a list's job is named after its first record
    confirm_as_the_forwarder_does(redis, first_reply["id"])
    assert "cot" not in request(url, "GET", f"{V1}/{ids[1]}", headers=TEAM_A).json

    one = post_json(url, V1, dets[1], **TEAM_A)
    assert one.status == 201 and one.headers["content-type"].startswith("application/xml")
    assert_same_event(originals[1], one.body.decode(), time_slack_ms=5_000)
    both = request(url, "POST", V1, body, wants_xml)
    events = [ET.tostring(e, encoding="unicode") for e in ET.fromstring(both.body)]
    assert len(events) == 2
    for original, rebuilt in zip(originals, events, strict=True):
        assert_same_event(original, rebuilt, time_slack_ms=5_000)
    again = structured(url, ce, TEAM_A).json
    assert again["duplicate"] is True
    assert_same_event(first_reply["cot"], again["cot"], time_slack_ms=5_000)
    assert redis.llen("rq:queue:tak") == 0  # answered, not delivered again


# -- bounds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [257, 1025, 500_000])
def test_huge_cloudevent_attributes_are_refused(url, redis_server, length):
    ev = event(detection(), "i" * length, "/cams/north")
    body = assert_problem(structured(url, ev, TEAM_A), 400)
    assert body["errors"][0]["path"] == "id"
    assert len(json.dumps(body)) < 2000  # never echoed back
    source = event(detection(), "ev-1", "/" + "s" * 600)
    assert assert_problem(structured(url, source, TEAM_A), 400)["errors"][0]["path"] == "source"
    redis = redis_server.client()
    assert not redis.keys("detection:record:*") and not redis.keys("detection:idem:*")
    assert redis.llen("rq:queue:tak") == 0


def test_long_ids_with_discord_alerts_on_never_500(product, redis_server):
    url = product(DISCORD_WEBHOOK_URL="http://127.0.0.1:9/hook", ALERT_CLASSES="vehicle")
    longest = event(detection(), "i" * 256, "/cams/north")  # the longest id allowed
    reply = structured(url, longest, TEAM_A)
    assert reply.status == 200, reply.body
    assert redis_server.client().llen("rq:queue:notify") == 1
    too_long = event(detection(), "i" * 1025, "/cams/north")
    assert_problem(structured(url, too_long, TEAM_A), 400)


def test_ten_times_the_detection_cap_is_a_413_and_stores_nothing(url, redis_server):
    events = [json.loads(to_structured(event(detection(), f"e{i}", "/s"))[1]) for i in range(1000)]
    reply = request(
        url, "POST", "/", json.dumps(events).encode(), {"Content-Type": BATCH, **TEAM_A}
    )
    body = assert_problem(reply, 413)
    assert body["max_detections"] == 100
    assert_problem(v1(url, [detection()] * 101, TEAM_A), 413)
    assert redis_server.client().llen("rq:queue:tak") == 0


def test_rate_limits_count_detections(product):
    url = product(RATE_LIMIT="150/minute")
    batch = [detection() for _ in range(100)]
    assert v1(url, batch, TEAM_A).status == 201  # costs 100
    limited = v1(url, batch, TEAM_A)  # 100 more would be 200 > 150
    assert_problem(limited, 429)
    assert int(limited.header("retry-after")) >= 1
    assert v1(url, detection(), TEAM_A).status == 201  # 101 of 150 (the 429 cost 1): fits
    assert v1(url, batch, TEAM_B).status == 201  # another producer has its own budget


def test_failed_authentication_is_throttled_per_client(product):
    url = product(AUTH_FAILURE_RATE_LIMIT="5/minute")
    forged = {"Authorization": "Bearer " + jwt.encode({"sub": "x", "exp": 2**40}, "w" * 32)}
    for _ in range(5):
        assert_problem(v1(url, detection(), forged), 401)
    for headers in (forged, {}, {"Authorization": "Basic eDp5"}):
        throttled = v1(url, detection(), headers)
        body = assert_problem(throttled, 429)
        assert throttled.header("retry-after")
        assert "expired" not in body["detail"] and "signature" not in body["detail"]
    # A valid token from the same address still passes: a flood of bad tokens locks nobody out.
    assert v1(url, detection(), TEAM_A).status == 201


def test_one_request_never_blocks_redis_for_50_ms(url, redis_server):
    """Every command Redis runs is logged with its duration; the largest request allowed (100
    detections in one batch, one script call) and a storm of small ones stay far below 50 ms."""
    redis = redis_server.client()
    redis.config_set("slowlog-log-slower-than", 0)  # every command, with its duration
    redis.config_set("slowlog-max-len", 1_000_000)  # (commands inside scripts are logged too)
    redis.slowlog_reset()
    for round_ in range(5):
        events = [
            json.loads(to_structured(event(detection(), f"r{round_}-{i}", "/s"))[1])
            for i in range(100)
        ]
        reply = request(
            url, "POST", "/", json.dumps(events).encode(), {"Content-Type": BATCH, **TEAM_A}
        )
        assert reply.status == 200, reply.body
        no_5xx(v1(url, [detection(detection_id=f"x{round_}-{i}") for i in range(100)], TEAM_B))
    entries = redis.slowlog_get(1_000_000)
    scripts = [e for e in entries if e["command"].startswith((b"EVALSHA", b"EVAL "))]
    assert len(scripts) >= 10  # each ingest request stored its detections in one script call
    assert len(entries) < 1_000_000  # (nothing fell off the log)
    slowest = max(entry["duration"] for entry in entries)  # microseconds
    assert slowest < 50_000, slowest


# -- CloudEvents HTTP binding ----------------------------------------------------------------------


def test_binary_mode_headers_are_percent_decoded(url, redis_server):
    headers, body = to_binary(event(detection(), "caf%C3%A9-1", "/cams/n%C3%B8rth"))
    reply = request(url, "POST", "/", body, {**dict(headers), **TEAM_A})
    assert reply.status == 200, reply.body
    record = RecordStore(redis_server.client(), 86_400).get(reply.header("ce-id"))
    assert record["event_id"] == "café-1" and record["event_source"] == "/cams/nørth"
    assert reply.header("ce-subject") == "caf%C3%A9-1"
    bad = {**dict(headers), "ce-id": "%FF%FE", **TEAM_A}
    assert assert_problem(request(url, "POST", "/", body, bad), 400)["errors"][0]["path"] == "ce-id"


# -- Broker dead letters --------------------------------------------------------------------------


def _dead_letter_headers(event_id: str) -> dict[str, str]:
    headers, _ = to_binary(event(detection(), event_id, "/cams/north"))
    return {
        **dict(headers),
        "ce-knativeerrorcode": "422",
        "ce-knativeerrordest": "http://detection-api.detection-api.svc.cluster.local/",
        "ce-knativeerrordata": "eyJ0aXRsZSI6Imdlb21ldHJ5In0=",
    }


def queue_cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "detection-api"), "queue", *args],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_broker_dead_letters_are_stored_and_listed(product, redis_server):
    url = product()
    body = json.dumps(detection()).encode()
    assert_problem(request(url, "POST", "/dead-letters", body, _dead_letter_headers("dl-1")), 401)
    for _ in range(2):  # Knative may deliver a dead letter twice: stored once
        reply = request(
            url, "POST", "/dead-letters", body, {**_dead_letter_headers("dl-1"), **TEAM_A}
        )
        assert reply.status == 202, reply.body
    listed = queue_cli(redis_server.url, "dead")
    assert listed.returncode == 0, listed.stderr
    assert "error 422" in listed.stdout and "detection-api.svc.cluster.local" in listed.stdout
    assert "'dl-1'" in listed.stdout
    as_json = json.loads(queue_cli(redis_server.url, "dead", "--queue", "broker", "--json").stdout)
    assert [(d["event_id"], d["error_code"]) for d in as_json] == [("dl-1", "422")]
    assert json.loads(as_json[0]["data"]) == detection()
    requeue = queue_cli(redis_server.url, "requeue", "--all", "--queue", "broker")
    assert requeue.returncode == 2 and "not applicable" in requeue.stderr
    metrics = request(url, "GET", "/metrics").body.decode()
    assert 'detection_api_broker_dead_letters_total{error_code="422"} 1.0' in metrics
    purge = queue_cli(
        redis_server.url, "purge", "--dead", "--older-than", "0s", "--queue", "broker"
    )
    assert purge.returncode == 0 and "purged 1" in purge.stdout


def test_dead_letters_follow_the_cluster_trust_rule_of_post_root(product):
    url = product(AUTH_TRUST_CLUSTER_EVENTS="true")
    body = json.dumps(detection()).encode()
    # A Broker delivery: sent to the Service's cluster-local address (app/cluster_events.py).
    cluster = {"Host": "detection-api.detection-api.svc.cluster.local"}
    reply = request(url, "POST", "/dead-letters", body, {**_dead_letter_headers("dl-2"), **cluster})
    assert reply.status == 202, reply.body
    # The same letter to any other host is not a Broker delivery.
    reply = request(url, "POST", "/dead-letters", body, _dead_letter_headers("dl-3"))
    assert reply.status == 401, reply.body
    assert_problem(post_json(url, V1, detection()), 401)  # trust covers the event paths only


# -- mistyped settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [("RATE_LIMIT", "lots"), ("MAX_BODY_BYTES", "1MB?"), ("EVENTING_OIDC_ISSUER", "https://x")],
)
def test_a_mistyped_setting_stops_the_function_with_one_line(redis_server, name, value):
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "REDIS_URL": redis_server.url,
        "JWT_SECRET_KEY": SECRET,
        "DISCORD_WEBHOOK_URL": "https://discord.example/api/webhooks/1/not-a-real-token",
        name: value,
    }
    done = subprocess.run(
        function_argv(free_port()),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    expected = "EVENTING_OIDC_AUDIENCE" if name.startswith("EVENTING") else name
    assert expected in lines[0] and "example:" in lines[0]
    assert SECRET not in lines[0] and "not-a-real-token" not in lines[0]


def test_an_empty_setting_means_the_default(product):
    url = product(RATE_LIMIT="", MAX_BODY_BYTES="")
    assert v1(url, detection(), TEAM_A).status == 201


def test_the_worker_refuses_a_mistyped_setting_with_one_line(redis_server):
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url, "FORWARDER_BATCH_SIZE": "lots"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "detection-api"), "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "FORWARDER_BATCH_SIZE='lots'" in done.stderr, done.stderr


def test_a_hostile_mix_answers_no_5xx_and_loses_nothing(url, redis_server):
    replies = [
        v1(url, detection(detection_id="000042", camera_id="cam-north"), TEAM_A),
        v1(url, detection(detection_id="000042", camera_id="cam-north"), TEAM_B),
        v1(url, detection(detection_id="000042", camera_id="cam-south"), TEAM_A),
        structured(url, event(detection(), "x" * 300, "/s"), TEAM_A),
        request(url, "POST", "/", b"{" * 10_000, {"Content-Type": BATCH, **TEAM_A}),
        v1(url, [detection()] * 1000, TEAM_B),
        request(url, "POST", "/dead-letters", b"\xff" * 100, {"Content-Type": "x/y", **TEAM_A}),
        v1(url, detection(detection_id="000042", camera_id="cam-north"), TEAM_A),  # replay
    ]
    no_5xx(*replies)
    assert [r.status for r in replies] == [201, 201, 201, 400, 400, 413, 415, 201]
    assert replies[-1].json["duplicate"] is True
    assert len(set(queued_record_ids(redis_server.client()))) == 3
