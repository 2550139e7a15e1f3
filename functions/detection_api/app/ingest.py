"""Ingest: validate -> geolocate -> thresholds -> CoT -> store record and delivery job atomically.

Framework-free: the HTTP layer turns CloudEvents and v1 JSON into ``Submission``s and the results
back into responses. A request's detections are all-or-nothing: one invalid (400) or geometrically
impossible (422) detection rejects the request and stores nothing, so a producer can fix and resend
the whole thing. Redeliveries by the same producer (same CloudEvent source+id, or same v1 camera and
detection_id) find their idempotency marker and get the same answer without a second delivery; the
same identity twice in one request is a 400. Identities are always scoped to the authenticated
producer (``Submission.producer``), so producers and cameras never collide (see records.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue

from detection_api.alerts.notify import (
    detection_alert_payload,
    enqueue_notification,
    notify_queue,
    should_alert,
)
from detection_api.app import problems
from detection_api.app.problems import Problem
from detection_api.app.submissions import Outcome, Submission, check_repeats, stored_outcomes
from detection_api.core import CoreConfig, geolocations_as_dicts, process_detections
from detection_api.geo.types import GeolocationError
from detection_api.model import Detection, parse_detection
from detection_api.settings import Settings
from detection_api.store.atomic import AtomicWriter, WindowCharge
from detection_api.store.audit import AuditEvent, AuditLog
from detection_api.store.records import (
    DeliveryState,
    NewRecord,
    RecordStore,
    new_record,
    new_record_ids,
)
from detection_api.store.tak_jobs import (
    MAX_DELIVERIES_PER_JOB,
    Delivery,
    enqueue_deliveries,
    job_ids_for,
    tak_queue,
)

log = logging.getLogger(__name__)

_STORE_ATTEMPTS = 5


class Ingestor:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.records = RecordStore(redis, settings.retention_seconds)
        self.queue: Queue = tak_queue(redis)
        self.atomic = AtomicWriter(redis)
        self.notify_queue = notify_queue(redis, settings)  # None: Discord alerts are off
        self.core = CoreConfig.from_settings(settings)
        self.audit = AuditLog(
            redis, max_len=settings.audit_max_len, retention_seconds=settings.retention_seconds
        )

    # -- steps ----------------------------------------------------------------------------------

    def validate(
        self, submissions: list[Submission], *, batch: bool, now: datetime
    ) -> list[Detection]:
        detections: list[Detection] = []
        errors: list[dict[str, Any]] = []
        for index, submission in enumerate(submissions):
            prefix: tuple[int, ...] = (index,) if batch else ()
            if not isinstance(submission.payload, dict):
                errors.append(
                    {
                        "path": problems.field_path((), prefix),
                        "message": "a detection must be a JSON object",
                    }
                )
                continue
            try:
                detections.append(
                    parse_detection(
                        submission.payload, max_image_bytes=self.core.max_image_bytes, now=now
                    )
                )
            except ValidationError as exc:
                errors.extend(problems.validation_errors(exc.errors(), prefix))
        if errors:
            raise problems.invalid(
                f"{len(errors)} invalid field(s); nothing was stored", errors=errors[:100]
            )
        return detections

    def ingest(
        self,
        submissions: list[Submission],
        *,
        batch: bool = False,
        charges: Sequence[WindowCharge] = (),
    ) -> list[Outcome]:
        """Validate, place and store a request's detections. ``charges`` (the request's rate-limit
        charge) are taken exactly once: with the write, or with the rejection's audit entry.
        Raises ``Problem`` (rejected; nothing stored), ``RateLimited`` (a charge was refused;
        nothing stored) or the 503 ``Problem`` when Redis is unavailable."""
        try:
            if not submissions:
                raise problems.invalid("no detections in the request")
            # One clock read per request: the timestamp checks and the CoT's generation time.
            now = datetime.now(UTC)
            detections = self.validate(submissions, batch=batch, now=now)
            check_repeats(submissions, batch=batch)
            record_ids = new_record_ids(len(submissions))
            # Geometry first: an impossible detection rejects the request before any write.
            processed = self._process(submissions, detections, record_ids, batch, now)
        except Problem as problem:
            self._audit_rejection(submissions, problem, charges)
            raise
        try:
            outcomes = self._store(submissions, detections, record_ids, processed, charges)
        except RedisError as exc:
            log.warning("redis unavailable during ingest: %s", exc.__class__.__name__)
            raise problems.redis_unavailable() from exc
        except Problem as problem:
            self._audit_rejection(submissions, problem, ())
            raise
        if log.isEnabledFor(logging.INFO):  # (not building 100 ``extra`` dicts to drop them)
            for outcome in outcomes:
                log.info(
                    "detection %s",
                    "duplicate" if outcome.duplicate else outcome.state,
                    extra={"record_id": outcome.record_id, "detection_id": outcome.detection_id},
                )
        return outcomes

    def _audit_rejection(
        self, submissions: list[Submission], problem: Problem, charges: Sequence[WindowCharge]
    ) -> None:
        """The rejection's audit entries, written with the request's charge in one round trip.
        Past the limit the charge is refused and ``RateLimited`` replaces the rejection (as a
        429 came before validation when the charge was its own step)."""
        reason = f"{problem.slug}: {problem.detail or problem.title}"
        try:
            recorder = self.atomic.recorder()
            for submission in submissions:
                payload = submission.payload if isinstance(submission.payload, dict) else {}
                detection_id = payload.get("detection_id")
                self.audit.append(
                    recorder,
                    AuditEvent.REJECTED,
                    detection_id=detection_id if isinstance(detection_id, str) else None,
                    event_id=submission.event_id,
                    reason=reason,
                )
            self.atomic.write_if_absent([], recorder, charges)
        except RedisError:
            pass  # the rejection itself is answered and counted; the trail is best effort here
        log.info(
            "rejected %d detection(s): %s",
            len(submissions),
            reason,
            extra={"event_id": submissions[0].event_id if submissions else None},
        )

    def _store(
        self,
        submissions: list[Submission],
        detections: list[Detection],
        record_ids: list[str],
        processed: dict[int, tuple[Outcome, NewRecord]],
        charges: Sequence[WindowCharge],
    ) -> list[Outcome]:
        markers = [s.idempotency for s in submissions]
        outcomes: dict[int, Outcome] = {}
        pending = list(range(len(submissions)))
        for _ in range(_STORE_ATTEMPTS):
            accepted_at = time.time()
            recorder = self.atomic.recorder()
            deliveries: list[Delivery] = []
            queued = [i for i in pending if processed[i][0].state == DeliveryState.QUEUED]
            job_of = dict(zip(queued, job_ids_for([record_ids[i] for i in queued]), strict=True))
            for i in pending:
                outcome, fields = processed[i]
                if i in job_of:
                    fields.job_id = job_of[i]  # (a retry may put it in another job: reset)
                self.records.write_new(
                    recorder, record_ids[i], fields, idempotency=markers[i], now=accepted_at
                )
                if i in job_of:
                    deliveries.append(
                        Delivery(record_ids[i], outcome.cot_xml, accepted_at, markers[i])
                    )
                    self._alert_if_wanted(recorder, detections[i], outcome)
            # One global audit entry per request; each record's trail derives from the record.
            self.audit.append_accepted(
                recorder,
                [record_ids[i] for i in pending],
                filtered_ids=[record_ids[i] for i in pending if i not in job_of],
                now=accepted_at,
            )
            # A request's detections travel in one job (up to 100): one rq job per request.
            enqueue_deliveries(self.queue, recorder, deliveries, per_job=MAX_DELIVERIES_PER_JOB)
            guarded = [i for i in pending if markers[i] is not None]
            existing = self.atomic.write_if_absent([markers[i] for i in guarded], recorder, charges)
            charges = ()  # taken: a retry for the rest of a redelivered request pays nothing more
            if not existing:
                outcomes.update((i, processed[i][0]) for i in pending)
                return [outcomes[i] for i in range(len(submissions))]
            # Redeliveries: answer them from their marker and record, then write the rest.
            duplicates = [guarded[j] for j in existing]
            found = stored_outcomes(
                self.redis,
                self.records,
                [markers[i] for i in duplicates],
                stale_seconds=self.core.stale_seconds,
            )
            for i, outcome in zip(duplicates, found, strict=True):
                if outcome is not None:  # (the marker may have expired in between: write anew)
                    if not outcome.uid:  # only the marker is left: the id is the producer's
                        outcome.detection_id = processed[i][0].detection_id
                    outcomes[i] = outcome
                    pending.remove(i)
            if not pending:
                return [outcomes[i] for i in range(len(submissions))]
        raise Problem(
            409, "conflict", "Concurrent redelivery", "The same event is being stored right now"
        )

    def _process(
        self,
        submissions: list[Submission],
        detections: list[Detection],
        record_ids: list[str],
        batch: bool,
        now: datetime,
    ) -> dict[int, tuple[Outcome, NewRecord]]:
        errors: list[dict[str, Any]] = []
        out: dict[int, tuple[Outcome, NewRecord]] = {}
        detection_ids = [
            det.detection_id or sub.event_id or record_ids[i]
            for i, (det, sub) in enumerate(zip(detections, submissions, strict=True))
        ]
        # One pass over the request: its detections are located together (core.process_detections).
        results = process_detections(
            detections,
            self.core,
            record_ids=record_ids,
            detection_ids=detection_ids,
            producers=[sub.producer for sub in submissions],
            now=now,
        )
        # JSON-ready geolocations of the located ones, in order (rounded together in a list)
        located = iter(
            geolocations_as_dicts(
                [r.geolocation for r in results if not isinstance(r, GeolocationError)]
            )
        )
        for i, (det, sub, result) in enumerate(zip(detections, submissions, results, strict=True)):
            detection_id = detection_ids[i]
            if isinstance(result, GeolocationError):
                path = problems.field_path(("sensor_metadata",), (i,) if batch else ())
                errors.append({"path": path, "message": str(result), "reason": result.reason.value})
                continue
            geolocation = next(located)
            filter_reason = self._filter_reason(det, geolocation)
            state = DeliveryState.FILTERED if filter_reason else DeliveryState.QUEUED
            # Positional where a keyword call would cost a dict per detection: Outcome's fields
            # in order (a class call gets keywords as a dict), and new_record's first four (with
            # more than 15 keywords CPython compiles the call to build one).
            outcome = Outcome(
                record_ids[i],  # record_id
                detection_id,
                str(state),
                False,  # duplicate
                result.uid,
                result.cot_type,
                result.cot_xml,
                det.object_class,
                geolocation,
                filter_reason,
            )
            fields = new_record(
                record_ids[i],
                state,
                detection_id,
                result.uid,
                cot_type=result.cot_type,
                # A queued detection's CoT is stored once, in its delivery job.
                cot=result.cot_xml if filter_reason else None,
                object_class=det.object_class,
                ai_confidence=det.ai_confidence,
                camera_id=det.camera_id,
                track_id=det.track_id,
                source=det.source,
                event_source=sub.event_source,
                event_id=sub.event_id,
                producer=sub.producer,
                filter_reason=filter_reason,
                geolocation=geolocation,
                captured_at=det.timestamp.timestamp(),
            )
            out[i] = (outcome, fields)
        if errors:
            raise Problem(
                422,
                "geometry",
                "Detection cannot be placed on the ground",
                f"{len(errors)} detection(s) have no ground intersection; nothing was stored",
                errors=errors[:100],
            )
        return out

    def _alert_if_wanted(self, recorder: Pipeline, det: Detection, outcome: Outcome) -> None:
        """A Discord alert for alert-class detections, queued with the detection itself (the
        notifier posts it; a request never waits for Discord)."""
        if self.notify_queue is None or not should_alert(
            det.object_class, det.ai_confidence, self.settings
        ):
            return
        geo = outcome.geolocation
        payload = detection_alert_payload(
            record_id=outcome.record_id,
            object_class=det.object_class,
            confidence=det.ai_confidence,
            lat=geo["lat"],
            lon=geo["lon"],
            ce90_m=geo["ce90_m"],
            flag=geo["flag"],
            detection_id=outcome.detection_id,
            camera_id=det.camera_id,
            track_id=det.track_id,
            timestamp=det.timestamp,
        )
        enqueue_notification(self.notify_queue, "detection_alert", payload, pipeline=recorder)

    def _filter_reason(self, det: Detection, geolocation: dict[str, Any]) -> str | None:
        if det.ai_confidence < self.settings.min_ai_confidence:
            return f"ai_confidence {det.ai_confidence} below MIN_AI_CONFIDENCE"
        max_ce90 = self.settings.max_ce90_m
        if max_ce90 > 0 and geolocation["ce90_m"] > max_ce90:
            return f"ce90 {geolocation['ce90_m']:.1f} m above MAX_CE90_M"
        return None
