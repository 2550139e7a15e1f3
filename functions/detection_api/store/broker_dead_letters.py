"""Dead letters of the Knative Broker: events the Trigger could not deliver to the function.

The Trigger's ``deadLetterSink`` is the function itself (``POST /dead-letters``), which stores each
one here, in Redis next to the forwarder's dead letters, so ``detection-api queue dead --queue
broker`` lists them with Knative's error code and destination, and ``queue purge`` ages them out.
A Broker dead letter cannot be requeued from here: the function never accepted it (the usual
cause is a 4xx answer, which a resend would get again); the producer, or an operator with the
listed event, sends it again after fixing the cause.

Storage: one Redis stream, ``detection:deadletters:broker`` (entry ids are millisecond timestamps,
so purging by age is one ``XTRIM MINID``), capped at ``MAX_LETTERS`` entries. Knative may deliver
one dead letter more than once; a small marker per (source, id) stored for the retention window
keeps one entry.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

STREAM_KEY = "detection:deadletters:broker"
SEEN_PREFIX = "detection:deadletters:broker:seen:"
MAX_LETTERS = 10_000
QUEUE_LABEL = "broker"


@dataclass(frozen=True)
class BrokerDeadLetter:
    entry_id: str
    received_at: float
    event_id: str
    source: str
    type: str
    error_code: str | None  # knativeerrorcode: the HTTP status the destination answered
    error_dest: str | None  # knativeerrordest: where Knative tried to deliver
    error_data: str | None  # knativeerrordata: (base64 of) the destination's answer, truncated
    attributes: dict[str, str]
    data: str


def _seen_key(source: str, event_id: str) -> str:
    digest = hashlib.sha256(f"{len(source)}:{source}{event_id}".encode()).hexdigest()
    return SEEN_PREFIX + digest


# KEYS: seen marker, stream; ARGV: retention, max entries, received_at, attributes, data.
# The marker and the entry are written together or not at all (a retry after a failure stores it).
_STORE_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
           'received_at', ARGV[3], 'attributes', ARGV[4], 'data', ARGV[5])
return 1
"""


def store(redis: Redis, attributes: dict[str, str], data: str, *, retention_seconds: int) -> bool:
    """Store one dead letter; False when this (source, id) was stored already."""
    source, event_id = attributes.get("source", ""), attributes.get("id", "")
    stored = redis.eval(
        _STORE_SCRIPT,
        2,
        _seen_key(source, event_id),
        STREAM_KEY,
        retention_seconds,
        MAX_LETTERS,
        repr(time.time()),
        json.dumps(attributes, ensure_ascii=False, separators=(",", ":")),
        data,
    )
    return bool(stored)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def list_letters(redis: Redis, count: int = 1000) -> list[BrokerDeadLetter]:
    out = []
    for entry_id, raw in redis.xrevrange(STREAM_KEY, count=count):
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            attributes = json.loads(fields.get("attributes", "{}"))
        except ValueError:
            attributes = {}
        out.append(
            BrokerDeadLetter(
                entry_id=_text(entry_id),
                received_at=float(fields.get("received_at", "0") or 0),
                event_id=attributes.get("id", ""),
                source=attributes.get("source", ""),
                type=attributes.get("type", ""),
                error_code=attributes.get("knativeerrorcode"),
                error_dest=attributes.get("knativeerrordest"),
                error_data=attributes.get("knativeerrordata"),
                attributes=attributes,
                data=fields.get("data", ""),
            )
        )
    return out


def purge(redis: Redis, older_than_seconds: float, *, now: float | None = None) -> int:
    """Delete the dead letters received more than ``older_than_seconds`` ago."""
    now = time.time() if now is None else now
    cutoff_ms = max(0, int((now - older_than_seconds) * 1000))
    return int(redis.xtrim(STREAM_KEY, minid=cutoff_ms, approximate=False))
