"""What ingest takes and gives: a ``Submission`` (one detection as received, with the producer's
identity of it) and an ``Outcome`` (its answer), plus the two identity rules around them: the same
identity twice in one request is refused, and a redelivery is answered from its marker (and the
record, while it is kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from redis import Redis

from detection_api.app import problems
from detection_api.record_event import event_from_record
from detection_api.store.records import (
    DeliveryState,
    RecordStore,
    idempotency_key,
    record_key,
)


class Submission(NamedTuple):
    """One detection as received, with the producer's identity of it (for idempotency). A named
    tuple: one per detection of a request, at half a frozen dataclass's cost."""

    payload: Any
    identity: tuple[str, ...] | None = None  # e.g. ("ce", source, id); None: always new
    event_id: str | None = None  # CloudEvent id: the detection id when the payload has none
    event_source: str | None = None
    producer: str = "anonymous"  # the authenticated producer (see app/producers.py)
    identity_path: str = "detection_id"  # field path named when the identity repeats

    @property
    def idempotency(self) -> str | None:
        """The marker key: the identity scoped to the producer, or None (always a new record)."""
        return idempotency_key(self.producer, *self.identity) if self.identity else None


@dataclass(slots=True)
class Outcome:
    record_id: str
    detection_id: str
    state: str
    duplicate: bool
    uid: str
    cot_type: str
    cot_xml: str
    object_class: str
    geolocation: dict[str, Any]
    filter_reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.record_id,
            "detection_id": self.detection_id,
            "state": self.state,
            "uid": self.uid,
            "cot_type": self.cot_type,
            "object_class": self.object_class,
            "geolocation": self.geolocation,
        }
        if self.filter_reason:
            body["filter_reason"] = self.filter_reason
        if self.duplicate:
            body["duplicate"] = True
        return body


def check_repeats(submissions: list[Submission], *, batch: bool) -> None:
    """The same identity twice in one request is a 400: both cannot be new, and which one
    would be "the" detection is not ours to guess."""
    first: dict[str, int] = {}
    errors = []
    for index, submission in enumerate(submissions):
        key = submission.idempotency
        if key is None:
            continue
        if key in first:
            path = f"[{index}].{submission.identity_path}" if batch else submission.identity_path
            errors.append({"path": path, "message": f"repeats [{first[key]}] in this request"})
        else:
            first[key] = index
    if errors:
        raise problems.invalid(
            f"{len(errors)} detection(s) repeat an id of this request; nothing was stored",
            errors=errors[:100],
        )


def stored_outcomes(
    redis: Redis, records: RecordStore, markers: list[str | None], *, stale_seconds: int
) -> list[Outcome | None]:
    """The answers of earlier deliveries, by idempotency marker: from the record while it is
    kept, else (a confirmed record past CONFIRMED_RETENTION_SECONDS) from the marker alone.
    ``stale_seconds`` (COT_STALE_SECONDS) is for the events of confirmed records, rebuilt."""
    with redis.pipeline(transaction=False) as pipe:
        for marker in markers:
            pipe.get(marker)
        record_ids = pipe.execute()
    with redis.pipeline(transaction=False) as pipe:
        for record_id in record_ids:
            pipe.hgetall(record_key(record_id.decode() if record_id else "-"))
        stored = pipe.execute()
    # The records still kept, decoded together: a redelivered list's records share one job,
    # which holds their CoT and is read once for all of them.
    kept = [
        (record_id.decode(), raw)
        for record_id, raw in zip(record_ids, stored, strict=True)
        if record_id and raw
    ]
    decoded = iter(records.decode_many_with_cot(kept))
    out: list[Outcome | None] = []
    for record_id, raw in zip(record_ids, stored, strict=True):
        if not record_id:
            out.append(None)
        elif raw:
            out.append(outcome_from_record(next(decoded), stale_seconds=stale_seconds))
        else:
            out.append(confirmed_outcome(record_id.decode()))
    return out


def confirmed_outcome(record_id: str) -> Outcome:
    """A duplicate of a detection confirmed long enough ago that only its marker is left."""
    return Outcome(
        record_id=record_id,
        detection_id=record_id,
        state=DeliveryState.CONFIRMED.value,
        duplicate=True,
        uid="",
        cot_type="",
        cot_xml="",
        object_class="",
        geolocation={},
    )


def outcome_from_record(record: dict[str, Any], *, stale_seconds: int) -> Outcome:
    """The answer to a redelivery, from the record's API view (``decode_with_cot``). A confirmed
    record keeps no CoT: its event is rebuilt from the record (``record_event``)."""
    cot_xml = record.get("cot") or event_from_record(record, stale_seconds=stale_seconds) or ""
    return Outcome(
        record_id=record["id"],
        detection_id=record.get("detection_id", record["id"]),
        state=record.get("state", DeliveryState.QUEUED.value),
        duplicate=True,
        uid=record.get("uid", ""),
        cot_type=record.get("cot_type", ""),
        cot_xml=cot_xml,
        object_class=record.get("object_class", ""),
        geolocation=record.get("geolocation", {}),
        filter_reason=record.get("filter_reason"),
    )
