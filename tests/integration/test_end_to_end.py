"""End to end with real processes: the function (as the Procfile runs it), Redis, the TAK forwarder
(`detection-api worker`) and taky over mutual TLS with generated certificates. A subscriber on taky
sees every detection with the right uid, type and position, for every ingest mode."""

from __future__ import annotations

import json

import pytest
from cloudevents.conversion import to_structured
from http_client import post_json, request
from product import start_forwarder, start_function
from test_function_http import detection, event, post_event

from detection_api.local.procs import wait_until


@pytest.fixture
def stack(redis_server, taky_tls, start_process):
    env = {"REDIS_URL": redis_server.url, "AUTH_DISABLED": "true"}
    url = start_function(start_process, env)
    start_forwarder(start_process, {**env, **taky_tls.client_env()})
    return url


def _wait_confirmed(url: str, record_ids: list[str], timeout: float = 30.0) -> None:
    def all_confirmed() -> bool:
        return all(
            request(url, "GET", f"/api/v1/detections/{rid}").json["state"] == "confirmed"
            for rid in record_ids
        )

    wait_until(all_confirmed, timeout=timeout, interval=0.1, what="records confirmed")


def test_every_ingest_mode_reaches_the_tak_subscriber(stack, tak_subscriber):
    expected: dict[str, dict] = {}  # uid -> outcome

    rest = post_json(stack, "/api/v1/detections", detection(), Accept="application/json").json
    expected[rest["uid"]] = rest
    for mode in ("binary", "structured"):
        reply = post_event(stack, event(detection(), event_id=f"e2e-{mode}"), mode).json
        expected[reply["uid"]] = reply
    batch = [
        json.loads(to_structured(event(detection(track_id=f"t{i}"), event_id=f"e2e-b{i}"))[1])
        for i in range(3)
    ]
    replies = request(
        stack,
        "POST",
        "/",
        json.dumps(batch).encode(),
        {"Content-Type": "application/cloudevents-batch+json"},
    ).json
    for reply in replies:
        expected[reply["data"]["uid"]] = reply["data"]

    tak_subscriber.wait_for_uids(set(expected), timeout=30)
    by_uid = {e.uid: e for e in tak_subscriber.events}
    for uid, outcome in expected.items():
        received = by_uid[uid]
        assert received.type == outcome["cot_type"] == "a-u-G-E-V"
        assert received.how == "m-i"
        assert received.lat == pytest.approx(outcome["geolocation"]["lat"], abs=1e-6)
        assert received.lon == pytest.approx(outcome["geolocation"]["lon"], abs=1e-6)
        assert received.hae == pytest.approx(outcome["geolocation"]["hae_m"], abs=0.1)
    # Tracks keep their uid per camera+track, so the marker moves instead of multiplying.
    assert sum(1 for uid in expected if ".track." in uid) == 3
    _wait_confirmed(stack, [o["id"] for o in expected.values()])
    events = request(stack, "GET", f"/api/v1/detections/{rest['id']}/events").json
    assert [e["event"] for e in events][:2] == ["received", "queued"]


def test_confirmed_records_are_kept_for_the_shorter_confirmed_retention(
    redis_server, taky_tls, tak_subscriber, start_process
):
    env = {"REDIS_URL": redis_server.url, "AUTH_DISABLED": "true"}
    url = start_function(start_process, env)
    start_forwarder(
        start_process, {**env, **taky_tls.client_env(), "CONFIRMED_RETENTION_SECONDS": "120"}
    )
    outcome = post_json(url, "/api/v1/detections", detection(), Accept="application/json").json
    _wait_confirmed(url, [outcome["id"]])
    client = redis_server.client()
    assert 0 < client.ttl(f"detection:record:{outcome['id']}") <= 120
    # Its trail is derived from the record itself: nothing else is kept per record.
    assert not client.exists(f"detection:audit:{outcome['id']}")
    events = request(url, "GET", f"/api/v1/detections/{outcome['id']}/events").json
    assert [e["event"] for e in events] == ["received", "queued", "confirmed"]
    # Until it is confirmed a record keeps the full retention (an outage may last that long).
    taky_tls.stop()
    waiting = post_json(url, "/api/v1/detections", detection(), Accept="application/json").json
    assert client.ttl(f"detection:record:{waiting['id']}") > 86_000
