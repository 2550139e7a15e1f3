"""The core per detection: validation, geolocation + uncertainty, CoT, and all of it together.

Baseline: one pymap3d ``geodetic2ecef`` + ``ecef2geodetic`` round trip, the cheapest meaningful
geodetic operation in pure Python, timed in the same run. The ratio says how many such round
trips one detection costs; the contract is "well under 100 us" for process_detection.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pymap3d

from bench import Row, compare_microseconds
from detection_api.core import CoreConfig, process_detection
from detection_api.cot import DetectionFacts, build_detection_event
from detection_api.geo.locate import locate
from detection_api.model import parse_detection

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "detection.json"
UNIT = "us/detection"
BASELINE = "pymap3d geodetic2ecef+ecef2geodetic"


def run() -> list[Row]:
    payload = json.loads(EXAMPLE.read_text())
    now = datetime.now(UTC)
    det = parse_detection(payload, now=now)
    config = CoreConfig()
    inputs = det.geometry_inputs()
    geo = locate(*inputs)
    facts = DetectionFacts(
        record_id="0" * 32,
        detection_id="bench",
        object_class=det.object_class,
        ai_confidence=det.ai_confidence,
        camera_id=det.camera_id,
        track_id=det.track_id,
        source=det.source,
    )
    meta = det.sensor_metadata

    def baseline() -> object:
        x, y, z = pymap3d.geodetic2ecef(meta.location_lat, meta.location_lon, 120.0)
        return pymap3d.ecef2geodetic(x, y, z)

    def validate() -> object:
        return parse_detection(payload, now=now)

    def geolocate() -> object:
        return locate(*inputs)

    def cot() -> object:
        return build_detection_event(
            uid="detection-api.bench",
            cot_type="a-u-G-E-V",
            geolocation=geo,
            facts=facts,
            generated_at=now,
            captured_at=det.timestamp,
        )

    def pipeline() -> object:
        return process_detection(det, config, record_id="0" * 32, detection_id="bench", now=now)

    base, results = compare_microseconds(
        baseline,
        {
            "process_detection (locate + uncertainty + CoT)": pipeline,
            "locate (ray, ellipsoid hit, Jacobian, ce90)": geolocate,
            "build CoT event (ElementTree)": cot,
            "validate payload (pydantic)": validate,
        },
    )
    return [
        Row(name, value, UNIT, base, BASELINE, ratio) for name, (value, ratio) in results.items()
    ]
