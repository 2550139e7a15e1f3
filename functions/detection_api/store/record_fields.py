"""The record's fields: which there are, how they are encoded in the record hash, and how the
API view is decoded from it (either encoding). The one place that knows the record's fields;
``records.py`` stores and updates records with them.

Encoding (the "compact" records, written since job payload v3): field names of one or two letters
(``FIELDS``; ``state`` and ``attempts`` keep theirs, which operators read with ``HGET``), times as
integer milliseconds, the geolocation as a JSON array in ``GEO_KEYS`` order, no value longer than
64 bytes (longer ones in pieces), and nothing that follows from the record id (except the id
itself). Records written by earlier versions (long field names, ``created_at`` among them:
``is_legacy``) are decoded as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from detection_api.cot import record_uid


class DeliveryState(StrEnum):
    QUEUED = "queued"  # stored, waiting for the forwarder
    SENT = "sent"  # written to the TAK connection, confirmation pending
    CONFIRMED = "confirmed"  # TAK server answered the ping that followed it
    RETRYING = "retrying"  # a confirmation failed on a live connection; will be sent again
    DEAD = "dead"  # permanent failure, in rq's failed registry (requeue-able)
    FILTERED = "filtered"  # recorded, below the thresholds, never forwarded


# API name -> field name in the compact record hash.
FIELDS: dict[str, str] = {
    "state": "state",  # long names kept for the two fields operators and tools read directly
    "detection_id": "d",
    "uid": "u",
    "cot_type": "t",
    "cot": "x",
    "object_class": "c",
    "ai_confidence": "a",
    "camera_id": "m",
    "track_id": "k",
    "source": "o",
    "event_source": "es",
    "event_id": "ei",
    "producer": "p",
    "filter_reason": "f",
    "geolocation": "g",
    "job_id": "j",
    "created_at": "ca",
    # The capture time (the CoT start, to rebuild a confirmed record's event), as milliseconds
    # before created_at: a number of a few bytes where the time itself takes ten.
    "captured_at": "cd",
    "updated_at": "ua",
    "sent_at": "sa",
    "confirmed_at": "ka",
    "attempts": "attempts",
    "last_error": "e",
}
_NAMES = {short: name for name, short in FIELDS.items()}
_TIMES = frozenset({"created_at", "updated_at", "sent_at", "confirmed_at"})
# The geolocation's keys (core.geolocation_as_dict), stored positionally; others go in a dict.
GEO_KEYS = (
    "lat", "lon", "hae_m", "slant_range_m", "ground_distance_m", "ce90_m", "le90_m", "ce_m",
    "le_m", "flag", "covariance_en_m2", "terrain", "dem", "terrain_note",
)  # fmt: skip
_GEO_KEY_SET = frozenset(GEO_KEYS)
_LEGACY_JSON_FIELDS = frozenset({"geolocation", "detection", "reply"})


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def encode_geolocation(geolocation: dict[str, Any]) -> str:
    keys = tuple(geolocation)
    if keys == GEO_KEYS[: len(keys)] and None not in geolocation.values():
        # core's own dict (the common case): its keys in GEO_KEYS order, none missing in between
        values: list[Any] = list(geolocation.values())
    else:
        values = [geolocation.get(k) for k in GEO_KEYS]
        while values and values[-1] is None:
            values.pop()
        extra = {k: v for k, v in geolocation.items() if k not in _GEO_KEY_SET}
        if extra:
            values.append(extra)
    # orjson writes what json.dumps with compact separators writes, but non-ASCII as UTF-8
    # rather than \u escapes (either reads back the same), at a fifteenth of the cost
    return orjson.dumps(values).decode()


def decode_geolocation(text: str) -> dict[str, Any]:
    values = json.loads(text)
    extra = values.pop() if values and isinstance(values[-1], dict) else {}
    out = {k: v for k, v in zip(GEO_KEYS, values, strict=False) if v is not None}
    out.update(extra)
    return out


# Redis keeps a hash listpack-encoded (compact) only while every value is at most
# ``hash-max-listpack-value`` (64) bytes; one longer value turns it into a hashtable for good
# (~3x the memory). Longer values are stored in pieces: ``g``, ``g~1``, ``g~2``...
LISTPACK_VALUE_MAX = 64
_ONE_PIECE_ANY = LISTPACK_VALUE_MAX // 4  # this many characters fit one piece, whatever they are
_PIECE = "~"


def _pieces(short: str, value: str) -> dict[str, str]:
    step = LISTPACK_VALUE_MAX if value.isascii() else _ONE_PIECE_ANY
    pieces = {short: value[:step]}
    for n, start in enumerate(range(step, len(value), step), start=1):
        pieces[f"{short}{_PIECE}{n}"] = value[start : start + step]
    return pieces


def _put(pairs: list[str], short: str, text: str) -> None:
    """``short`` and ``text`` onto the flat field/value list, in pieces when ``text`` is long."""
    if len(text) <= _ONE_PIECE_ANY or (len(text) <= LISTPACK_VALUE_MAX and text.isascii()):
        pairs += (short, text)  # one piece, as _pieces would give (most fields, per record)
    else:
        for item in _pieces(short, text).items():
            pairs += item


@dataclass(slots=True)
class NewRecord:
    """A new record as ingest builds it (``new_record``): its hash fields already encoded, as a
    flat field/value list, but for the three the store step decides (``encode_new``): the job,
    set before each write attempt, and the creation time with the capture time relative to it."""

    pairs: list[str]
    captured_at: float  # seconds since the epoch
    job_id: str | None = None


def new_record(
    record_id: str,
    state: DeliveryState,
    detection_id: str,
    uid: str,
    *,
    cot_type: str,
    cot: str | None,
    object_class: str,
    ai_confidence: float,
    camera_id: str | None,
    track_id: str | None,
    source: str | None,
    event_source: str | None,
    event_id: str | None,
    producer: str,
    filter_reason: str | None,
    geolocation: dict[str, Any],
    captured_at: float,
) -> NewRecord:
    """A new record, encoded as ``encode_fields`` encodes the same fields, in one step: ingest
    writes one per detection, and building a dict of API names for the general encoder to walk
    cost 3% of a detection's instructions in a list (README, "Benchmarks"). The first four may
    be given by position: CPython compiles a call of more than 15 keyword arguments to build a
    dict of them, 9 K instructions, 1.6% of a detection's."""
    pairs = ["state", str(state)]  # str() of a StrEnum is its value (see core._geolocation_dict)
    if detection_id != record_id:
        _put(pairs, "d", detection_id)
    if uid != record_uid(record_id):
        _put(pairs, "u", uid)
    _put(pairs, "t", cot_type)
    if cot is not None:
        _put(pairs, "x", cot)
    _put(pairs, "c", object_class)
    pairs += ("a", repr(ai_confidence))  # a float's repr: ASCII, at most 24 characters
    if camera_id is not None:
        _put(pairs, "m", camera_id)
    if track_id is not None:
        _put(pairs, "k", track_id)
    if source is not None:
        _put(pairs, "o", source)
    if event_source is not None:
        _put(pairs, "es", event_source)
    if event_id is not None:
        _put(pairs, "ei", event_id)
    _put(pairs, "p", producer)
    if filter_reason is not None:
        _put(pairs, "f", filter_reason)
    _put(pairs, "g", encode_geolocation(geolocation))
    return NewRecord(pairs, captured_at)


def encode_new(record: NewRecord, *, record_id: str, created_at: float) -> list[str]:
    """The flat field/value list of ``record``'s hash, created at ``created_at``: what
    ``encode_fields`` gives for the same fields, in the same order."""
    created_ms = ms(created_at)
    tail = ["cd", str(created_ms - ms(record.captured_at))]
    if record.job_id is not None and record.job_id != record_id:
        _put(tail, "j", record.job_id)
    tail += ("ca", str(created_ms), "id", record_id)
    return record.pairs + tail


_DEFAULTED = frozenset({"detection_id", "job_id", "uid"})  # the names _default knows


def _default(name: str, record_id: str) -> str | None:
    """Values a record does not store because they follow from its id."""
    if name in ("detection_id", "job_id"):
        return record_id
    if name == "uid":
        return record_uid(record_id)
    return None


def encode_fields(fields: dict[str, Any], *, record_id: str, created_at: float) -> list[str]:
    """The compact hash of a new record from its API fields, as the flat field/value list
    ``HSET`` takes (None and redundant values are left out: ``detection_id`` and ``job_id``
    equal to the record id). Ingest's own records take ``new_record`` and ``encode_new``, which
    give the same list."""
    pairs: list[str] = []
    created_ms = ms(created_at)
    for name, value in fields.items():
        if value is None or (name in _DEFAULTED and value == _default(name, record_id)):
            continue
        if name == "geolocation":
            text = encode_geolocation(value)
        elif isinstance(value, str):
            text = value
        elif name == "captured_at":
            text = str(created_ms - ms(value))
        else:
            text = json.dumps(value, separators=(",", ":"), default=str)
        _put(pairs, FIELDS[name], text)
    # text, as every other value: the command goes as one JSON array
    pairs += ("ca", str(created_ms))
    # The id is redundant with the key, but a previous revision reading this record during a
    # traffic split (a redelivery answered from it) needs it to answer rather than fail.
    pairs += ("id", record_id)
    return pairs


def _joined(raw: dict[Any, Any]) -> dict[str, str]:
    """The record's fields as text, with values stored in pieces put back together."""
    whole: dict[str, str] = {}
    pieces: dict[str, list[tuple[int, str]]] = {}
    for k, v in raw.items():
        key, value = _text(k), _text(v)
        base, sep, index = key.partition(_PIECE)
        if sep and index.isdigit():
            pieces.setdefault(base, []).append((int(index), value))
        else:
            whole[key] = value
    for base, parts in pieces.items():
        whole[base] = whole.get(base, "") + "".join(p for _, p in sorted(parts))
    return whole


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def is_legacy(raw: dict[Any, Any]) -> bool:
    """A record written before the compact encoding (long field names, ``created_at`` among
    them)."""
    return b"created_at" in raw or "created_at" in raw


def decode(record_id: str, raw: dict[Any, Any]) -> dict[str, Any]:
    """The API view of a record hash (either encoding)."""
    if is_legacy(raw):
        return _decode_legacy(raw)
    record: dict[str, Any] = {
        "id": record_id,
        "detection_id": record_id,
        "uid": _default("uid", record_id),
        "attempts": 0,
    }
    for key, value in _joined(raw).items():
        name = _NAMES.get(key)
        if name is None:
            continue
        if name == "geolocation":
            record[name] = decode_geolocation(value)
        elif name == "attempts":
            record[name] = int(value)
        elif name in _TIMES:
            record[name] = int(value) / 1000
        else:
            record[name] = value
    delay_ms = record.pop("captured_at", None)  # stored as the milliseconds before created_at
    if delay_ms is not None and "created_at" in record:
        record["captured_at"] = (round(record["created_at"] * 1000) - int(delay_ms)) / 1000
    record.pop("job_id", None)  # internal
    # The hot path writes only its own timestamp: the last change is the latest of them.
    record["updated_at"] = max(record.get(t, 0.0) for t in _TIMES)
    return record


def _decode_legacy(raw: dict[Any, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for k, v in raw.items():
        key, value = _text(k), _text(v)
        if key in _LEGACY_JSON_FIELDS:
            record[key] = json.loads(value)
        elif key == "attempts":
            record[key] = int(value)
        elif key.endswith("_at"):
            record[key] = float(value)
        elif key != "idem":
            record[key] = value
    return record


def job_id_of(record_id: str, raw: dict[Any, Any]) -> str:
    """The delivery job that carries a compact record's CoT."""
    job = raw.get(b"j") or raw.get("j")
    return _text(job) if job else record_id
