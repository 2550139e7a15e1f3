"""The core pipeline of one detection: geolocate it, then describe it as a CoT event. No I/O.

Validation is the model's job (``model.parse_detection``); storing and delivering belong to the
callers (HTTP ingest, CLI).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from detection_api.cot import (
    DEFAULT_TYPE_MAP,
    DetectionFacts,
    build_detection_event,
    cot_type_for,
    detection_uid,
    parse_type_map,
)
from detection_api.geo.locate import locate
from detection_api.geo.types import Geolocation
from detection_api.model import DEFAULT_MAX_IMAGE_BYTES, Detection
from detection_api.settings import Settings


@dataclass(frozen=True)
class CoreConfig:
    stale_seconds: int = 300
    type_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_TYPE_MAP)
    max_range_m: float = 20_000.0
    green_max_m: float = 30.0
    yellow_max_m: float = 100.0
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> CoreConfig:
        """Raises ValueError for a malformed ``COT_TYPE_MAP`` or inverted ce90 cut-offs."""
        if settings.ce90_yellow_m < settings.ce90_green_m:
            raise ValueError("CE90_YELLOW_M must not be below CE90_GREEN_M")
        return cls(
            stale_seconds=settings.cot_stale_seconds,
            type_map=MappingProxyType(parse_type_map(settings.cot_type_map)),
            max_range_m=settings.max_range_m,
            green_max_m=settings.ce90_green_m,
            yellow_max_m=settings.ce90_yellow_m,
            max_image_bytes=settings.max_image_bytes,
        )


@dataclass(frozen=True)
class ProcessedDetection:
    record_id: str
    detection_id: str
    uid: str
    cot_type: str
    geolocation: Geolocation
    cot_xml: str
    generated_at: datetime


def process_detection(
    det: Detection,
    config: CoreConfig,
    *,
    record_id: str,
    detection_id: str,
    now: datetime | None = None,
    producer: str | None = None,
) -> ProcessedDetection:
    """Geolocate ``det`` and build its CoT event. Raises ``GeolocationError`` (with the reason)
    when the ray through the pixel does not reach the ground within range. ``producer`` (the
    authenticated identity) scopes track uids, so producers cannot move each other's markers."""
    pose, intrinsics, pixel_x, pixel_y, sigmas = det.geometry_inputs()
    geolocation = locate(
        pose,
        intrinsics,
        pixel_x,
        pixel_y,
        sigmas,
        max_range_m=config.max_range_m,
        green_max_m=config.green_max_m,
        yellow_max_m=config.yellow_max_m,
    )
    generated_at = now if now is not None else datetime.now(UTC)
    uid = detection_uid(
        record_id=record_id,
        camera_id=det.camera_id,
        track_id=det.track_id,
        source=det.source,
        producer=producer,
    )
    cot_type = cot_type_for(det.object_class, config.type_map)
    facts = DetectionFacts(
        record_id=record_id,
        detection_id=detection_id,
        object_class=det.object_class,
        ai_confidence=det.ai_confidence,
        camera_id=det.camera_id,
        track_id=det.track_id,
        source=det.source,
        image_sha256=det.image_sha256,
    )
    cot_xml = build_detection_event(
        uid=uid,
        cot_type=cot_type,
        geolocation=geolocation,
        facts=facts,
        generated_at=generated_at,
        captured_at=det.timestamp,
        stale_seconds=config.stale_seconds,
    )
    return ProcessedDetection(
        record_id=record_id,
        detection_id=detection_id,
        uid=uid,
        cot_type=cot_type,
        geolocation=geolocation,
        cot_xml=cot_xml,
        generated_at=generated_at,
    )


def geolocation_as_dict(geo: Geolocation) -> dict[str, Any]:
    """JSON-ready geolocation: degrees to 1e-9 (0.1 mm), metres to 1 mm."""
    var_e, cov_en, var_n = geo.covariance_en_m2
    return {
        "lat": round(geo.lat_deg, 9),
        "lon": round(geo.lon_deg, 9),
        "hae_m": round(geo.hae_m, 3),
        "slant_range_m": round(geo.slant_range_m, 3),
        "ground_distance_m": round(geo.ground_distance_m, 3),
        "ce90_m": round(geo.ce90_m, 3),
        "le90_m": round(geo.le90_m, 3),
        "ce_m": round(geo.ce_m, 3),
        "le_m": round(geo.le_m, 3),
        "flag": geo.flag.value,
        # Variances can be far below 1 m²: keep significant digits, not decimals.
        "covariance_en_m2": [float(f"{v:.6g}") for v in (var_e, cov_en, var_n)],
    }
