"""The Broker's dead letters in Redis: stored once per (source, id), listed newest first, purged
by age (real Redis server)."""

from __future__ import annotations

import time

from redis import Redis

from detection_api.store import broker_dead_letters as letters


def attributes(event_id: str, code: str = "422") -> dict[str, str]:
    return {
        "id": event_id,
        "source": "/cams/north",
        "type": "org.detectionapi.detection.created",
        "knativeerrorcode": code,
        "knativeerrordest": "http://detection-api.ns.svc.cluster.local/",
    }


def test_a_letter_is_stored_once_and_listed_with_knatives_error(redis: Redis) -> None:
    assert letters.store(redis, attributes("e-1"), '{"x": 1}', retention_seconds=60)
    assert not letters.store(redis, attributes("e-1"), '{"x": 1}', retention_seconds=60)
    assert letters.store(redis, attributes("e-2", "503"), "", retention_seconds=60)
    listed = letters.list_letters(redis)
    assert [(x.event_id, x.error_code) for x in listed] == [("e-2", "503"), ("e-1", "422")]
    assert listed[1].error_dest == "http://detection-api.ns.svc.cluster.local/"
    assert listed[1].data == '{"x": 1}' and listed[1].source == "/cams/north"


def test_purge_removes_only_the_old_ones(redis: Redis) -> None:
    letters.store(redis, attributes("old"), "", retention_seconds=60)
    assert letters.purge(redis, 3600) == 0
    assert letters.purge(redis, 0, now=time.time() + 1) == 1
    assert letters.list_letters(redis) == []
