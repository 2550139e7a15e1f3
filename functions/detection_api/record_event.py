"""The CoT event of a detection, rebuilt from its stored record: the answer to a redelivery that
arrives after the event itself was dropped (a confirmed record keeps no CoT: README, "Redis cost
per detection"), so a v1 client that retries still gets the event it asked for.

Rebuilt with the same template (``cot.build_detection_event``) from what the record holds, it is
the original event except for what the record does not keep:

- ``time`` is the record's ``created_at`` (the original's generation time, a few milliseconds
  earlier); ``stale`` follows from it as it did;
- numbers come from the record's geolocation, rounded to 1e-9 degrees and 1 mm before the event's
  1e-7 degrees and 1 cm, so a last digit can differ by one (1e-7 degrees, 1 cm);
- no ``image_sha256`` (records do not keep it).

Pure: it reads the record's API view (``store.record_fields.decode``), not Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from detection_api.cot import DetectionFacts, build_detection_event
from detection_api.geo.types import ConfidenceFlag, Geolocation, Terrain

# Geolocation fields read from the record's geolocation (core.geolocation_as_dict's keys).
_LENGTHS = ("hae_m", "slant_range_m", "ground_distance_m", "ce90_m", "le90_m", "ce_m", "le_m")


def event_from_record(record: Mapping[str, Any], *, stale_seconds: int) -> str | None:
    """The detection's CoT event, or None when the record lacks what an event needs (a record
    of an earlier version without its geolocation, a malformed one): the caller answers without
    an event then, as it did before."""
    try:
        return _event(record, stale_seconds)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None


def _event(record: Mapping[str, Any], stale_seconds: int) -> str | None:
    geo = record["geolocation"]
    if not record.get("uid") or not record.get("cot_type"):
        return None
    hae, slant, ground, ce90, le90, ce, le = (float(geo[k]) for k in _LENGTHS)
    var_e, cov_en, var_n = geo["covariance_en_m2"]
    geolocation = Geolocation(
        lat_deg=float(geo["lat"]),
        lon_deg=float(geo["lon"]),
        hae_m=hae,
        slant_range_m=slant,
        ground_distance_m=ground,
        ce90_m=ce90,
        le90_m=le90,
        ce_m=ce,
        le_m=le,
        covariance_en_m2=(float(var_e), float(cov_en), float(var_n)),
        flag=ConfidenceFlag(geo["flag"]),
        terrain=Terrain(geo.get("terrain", Terrain.FLAT)),
        dem=geo.get("dem"),
        terrain_note=geo.get("terrain_note"),
    )
    facts = DetectionFacts(
        record_id=record["id"],
        detection_id=record.get("detection_id") or record["id"],
        object_class=record["object_class"],
        ai_confidence=float(record["ai_confidence"]),
        camera_id=record.get("camera_id"),
        track_id=record.get("track_id"),
        source=record.get("source"),
    )
    generated_at = _utc(record["created_at"])
    # Records written before the capture time was kept: the acceptance time stands in for it.
    captured_at = _utc(record.get("captured_at", record["created_at"]))
    return build_detection_event(
        uid=record["uid"],
        cot_type=record["cot_type"],
        geolocation=geolocation,
        facts=facts,
        generated_at=generated_at,
        captured_at=captured_at,
        stale_seconds=stale_seconds,
    )


def _utc(epoch_seconds: float) -> datetime:
    # The record's times are whole milliseconds; to the microsecond a double holds them exactly.
    return datetime.fromtimestamp(epoch_seconds, UTC)
