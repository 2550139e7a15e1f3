"""The template-built CoT event is the ElementTree-built one, byte for byte (issue 12).

``build_detection_event`` used to build an ElementTree and serialise it; it now fills a template
and escapes each value itself. ``_reference_event`` below is that former implementation, kept
here as the oracle: for representative and hostile inputs (XML metacharacters, quotes, unicode,
control characters, bidi controls, astral characters) both must give the same string, and
therefore parse to the same tree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detection_api.cot import (
    COT_VERSION,
    DETAIL_ELEMENT,
    HOW_MACHINE_IMAGERY,
    SENSOR_LINK_TYPE,
    TAK_UNKNOWN_ERROR,
    DetectionFacts,
    build_detection_event,
    cot_time,
    label_safe,
    xml_safe,
)
from detection_api.geo.types import ConfidenceFlag, Geolocation, Terrain
from test_cot import CAPTURED, GENERATED, facts, geolocation


def _reference_event(
    *,
    uid: str,
    cot_type: str,
    geolocation: Geolocation,
    facts: DetectionFacts,
    generated_at: datetime,
    captured_at: datetime,
    stale_seconds: int = 300,
) -> str:
    """The ElementTree implementation this module replaced (checks omitted: same inputs)."""
    geo = geolocation
    ce, le = min(geo.ce_m, TAK_UNKNOWN_ERROR), min(geo.le_m, TAK_UNKNOWN_ERROR)
    stale = max(generated_at, captured_at) + timedelta(seconds=stale_seconds)
    event = ET.Element(
        "event",
        {
            "version": COT_VERSION,
            "uid": xml_safe(uid),
            "type": cot_type,
            "time": cot_time(generated_at),
            "start": cot_time(captured_at),
            "stale": cot_time(stale),
            "how": HOW_MACHINE_IMAGERY,
        },
    )
    ET.SubElement(
        event,
        "point",
        {
            "lat": f"{geo.lat_deg:.7f}",
            "lon": f"{geo.lon_deg:.7f}",
            "hae": f"{geo.hae_m:.2f}",
            "ce": f"{ce:.2f}",
            "le": f"{le:.2f}",
        },
    )
    detail = ET.SubElement(event, "detail")
    short = facts.track_id or facts.detection_id[-6:]
    callsign = f"{facts.object_class} {short}"[:64]
    ET.SubElement(detail, "contact", {"callsign": label_safe(callsign)})
    parts = [
        f"{facts.object_class} {facts.ai_confidence:.0%}",
        f"CE90 {geo.ce90_m:.1f} m LE90 {geo.le90_m:.1f} m",
        geo.flag.value,
    ]
    if facts.camera_id:
        parts.append(f"camera {facts.camera_id}")
    if facts.track_id:
        parts.append(f"track {facts.track_id}")
    ET.SubElement(detail, "remarks").text = label_safe(" | ".join(parts))
    sensor = label_safe(facts.camera_id or facts.source or "")
    if sensor.strip():
        ET.SubElement(detail, "link", {"uid": sensor, "type": SENSOR_LINK_TYPE, "relation": "p-p"})

    def optional(attributes: dict[str, str | None]) -> dict[str, str]:
        return {name: xml_safe(value) for name, value in attributes.items() if value is not None}

    ET.SubElement(
        detail,
        DETAIL_ELEMENT,
        {
            "id": xml_safe(facts.detection_id),
            "record": xml_safe(facts.record_id),
            "class": xml_safe(facts.object_class),
            "confidence": f"{facts.ai_confidence:.3f}",
            "ce90": f"{geo.ce90_m:.2f}",
            "le90": f"{geo.le90_m:.2f}",
            "flag": geo.flag.value,
            **optional(
                {"camera": facts.camera_id, "track": facts.track_id, "source": facts.source}
            ),
            "slant_range": f"{geo.slant_range_m:.2f}",
            "ground_distance": f"{geo.ground_distance_m:.2f}",
            **optional({"image_sha256": facts.image_sha256}),
            "terrain": geo.terrain.value,
            **optional({"dem": geo.dem, "terrain_note": geo.terrain_note}),
        },
    )
    return ET.tostring(event, encoding="unicode")


def _tree(xml: str) -> tuple[Any, ...]:
    def node(element: ET.Element) -> tuple[Any, ...]:
        return (
            element.tag,
            sorted(element.attrib.items()),
            element.text,
            element.tail,
            [node(child) for child in element],
        )

    return node(ET.fromstring(xml))  # our own output


def _both(**overrides: Any) -> tuple[str, str]:
    args: dict[str, Any] = {
        "uid": "detection-api.drone-1.track.17",
        "cot_type": "a-u-G-E-V",
        "geolocation": geolocation(),
        "facts": facts(),
        "generated_at": GENERATED,
        "captured_at": CAPTURED,
        "stale_seconds": 300,
    }
    args.update(overrides)
    return build_detection_event(**args), _reference_event(**args)


HOSTILE = [
    "car & <b>\"quoted\" 'single'</b> &amp; ]]> &#0;",
    '"/><injected a="',
    "</detail></event><event>",
    "tab\there\nnewline\rreturn",
    "\x00\x01\x1f\x7f controls",
    "\x85\x9f C1",
    "\u202eevil\u202c \u2066iso\u2069 \u200e\u200f\u061c bidi",
    "\ufffe\uffff non-characters",
    "Ünïcödé 車 \U0001f697 astral",
    "   ",
    "",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_in_every_field_gives_the_elementtree_bytes(text: str) -> None:
    hostile_facts = facts(
        object_class=text or "car",
        detection_id=text or "d",
        record_id=text or "r",
        camera_id=text or None,
        track_id=text or None,
        source=text or None,
        image_sha256=text or None,
    )
    hostile_geo = geolocation()._replace(dem=text or None, terrain_note=text or None)
    new, old = _both(uid=f"u{text}", facts=hostile_facts, geolocation=hostile_geo)
    assert new == old
    assert _tree(new) == _tree(old)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"facts": facts(camera_id=None, track_id=None, source=None, image_sha256=None)},
        {"facts": facts(camera_id=None)},
        {"facts": facts(camera_id="\x01", source=None)},
        {
            "geolocation": geolocation(
                flag=ConfidenceFlag.RED, ce_m=float("inf"), le_m=1e12, lat_deg=-89.99999999
            )
        },
        {
            "geolocation": geolocation()._replace(
                terrain=Terrain.DEM, dem="srtm_n51w002.tif", terrain_note=None
            )
        },
        {"geolocation": geolocation()._replace(terrain_note="outside_dem")},
        {"generated_at": datetime(2030, 1, 1, tzinfo=UTC), "stale_seconds": 0},
        {"captured_at": datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5)))},
        {"cot_type": "a-u-G-E-V-U-B"},
    ],
)
def test_representative_events_give_the_elementtree_bytes(overrides: dict[str, Any]) -> None:
    new, old = _both(**overrides)
    assert new == old
    assert _tree(new) == _tree(old)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(min_size=1, max_size=40),
    optional_text=st.none() | st.text(max_size=20),
    confidence=st.floats(0.0, 1.0),
    lat=st.floats(-90.0, 90.0),
    ce90=st.floats(0.0, 1e9),
)
@example(text="&", optional_text='"', confidence=1.0, lat=0.0, ce90=0.0)
def test_any_text_and_numbers_give_the_elementtree_bytes(
    text: str, optional_text: str | None, confidence: float, lat: float, ce90: float
) -> None:
    detection_facts = facts(
        object_class=text,
        detection_id=text,
        ai_confidence=confidence,
        camera_id=optional_text,
        track_id=optional_text,
        source=text,
    )
    geo = geolocation(lat_deg=lat, ce90_m=ce90, ce_m=ce90 / 2.146)._replace(
        terrain_note=optional_text
    )
    new = build_detection_event(
        uid=f"u{text}",
        cot_type="a-u-G",
        geolocation=geo,
        facts=detection_facts,
        generated_at=GENERATED,
        captured_at=CAPTURED,
    )
    old = _reference_event(
        uid=f"u{text}",
        cot_type="a-u-G",
        geolocation=geo,
        facts=detection_facts,
        generated_at=GENERATED,
        captured_at=CAPTURED,
    )
    assert new == old
