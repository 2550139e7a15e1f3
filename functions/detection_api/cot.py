"""Cursor-on-Target 2.0 events for geolocated detections, and the TAK ping (README
"Cursor-on-Target").

Event shape::

    <event version="2.0" uid=… type="a-u-…" time=… start=… stale=… how="m-i">
      <point lat="…7 decimals" lon="…" hae="ground height" ce="1-sigma m" le="1-sigma m"/>
      <detail>
        <contact callsign="car 17"/>
        <remarks>car 87% | CE90 12.3 m LE90 4.1 m | GREEN | camera drone-1 | track 17</remarks>
        <link uid="drone-1" type="a-f-G-E-S" relation="p-p"/>
        <__detection id=… record=… class=… confidence=… ce90=… le90=… flag=… camera=… track=…
                     source=… slant_range=… ground_distance=… image_sha256=…
                     terrain="dem|flat" dem=… terrain_note=…/>
      </detail>
    </event>

- Times are UTC RFC 3339 with ``Z`` and milliseconds. ``time`` is the generation time, ``start``
  the capture timestamp, ``stale`` the later of the two plus the stale period.
- ``uid`` is ``detection-api.<producer tag>.<camera>.track.<track_id>`` when the producer tracks
  objects (the marker moves instead of multiplying; camera is ``camera_id``, else the source, else
  ``unknown``; the producer tag is 12 hex characters of the SHA-256 of the authenticated producer,
  so no producer can move another's marker), otherwise ``detection-api.<record_id>``.
- Map labels (``callsign``, ``remarks``, the sensor link) lose C1 and bidirectional control
  characters as well as what XML forbids.
- ``contact callsign`` is ``<class> <track_id>``, else ``<class> <last 6 characters of the
  detection id>``: short enough for a map label, distinct between consecutive detections.
- ``<link relation="p-p">`` (parent-producer) names the camera (``camera_id``, else the source)
  with the generic sensor type ``a-f-G-E-S``; absent when the producer names neither.
- ``<__detection>`` is our machine-readable element (the ``__`` prefix follows TAK's convention
  for non-standard detail elements such as ``__group``). Attributes that have no value are left
  out. ``confidence`` is 0..1; lengths are metres.
- The output has no XML declaration (events are concatenated on a TAK stream). Every text and
  attribute value has the characters XML 1.0 forbids removed, then is escaped (``xml.sax.saxutils``
  with ElementTree's attribute entities), so ``& < > "`` never reach a TAK parser raw. The
  detection event is written from a template, byte-for-byte what ElementTree serialises for the
  same tree (five times cheaper; issue 12); the ping is still built with ElementTree.

CoT types by object class: ``cot_types.py``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import xml.etree.ElementTree as ET  # nosec B405 # builds XML; parses nothing
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from xml.sax.saxutils import escape as _escape  # nosec B406 # escapes text; parses nothing

from detection_api.cot_types import is_cot_type
from detection_api.geo.types import Geolocation

COT_VERSION = "2.0"
HOW_MACHINE_IMAGERY = "m-i"
SENSOR_LINK_TYPE = "a-f-G-E-S"  # friendly ground equipment, sensor: the camera that saw it
DETAIL_ELEMENT = "__detection"
UID_PREFIX = "detection-api"
PING_TYPE = "t-x-c-t"
PONG_TYPE = "t-x-c-t-r"
TAK_UNKNOWN_ERROR = 9_999_999.0  # TAK's "unknown" ce/le

# Everything XML 1.0 does not allow in a document (C0 controls but tab/LF/CR, surrogates, FFFE/F).
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Also removed from map labels (callsign, remarks): C1 controls and the Unicode bidirectional
# controls (ALM, LRM, RLM, embeddings, overrides, isolates), which can make a label read as
# something else on a TAK client ("Trojan Source"-style spoofing of a callsign).
_NOT_LABEL_CHAR = re.compile("[\x80-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
# What ElementTree escapes in an attribute (the superset of what it escapes in text).
_NEEDS_ESCAPE = re.compile(r'[&<>"\r\n\t]')
# Printable ASCII but the escaped characters: a value XML can carry as it is (the fast path).
_PLAIN = re.compile(r"[ !#-%\'-;=?-~]*\Z")
_ATTRIBUTE_ENTITIES = {'"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"}
_PRODUCER_TAG_CHARS = 12
_MAX_UID_PART = 128
_MAX_CALLSIGN = 64
_CALLSIGN_ID_CHARS = 6


# --- small formatting helpers ------------------------------------------------------------------


def xml_safe(value: str) -> str:
    """``value`` without the characters XML 1.0 cannot carry (escaping is ElementTree's job)."""
    if value.isascii() and value.isprintable():  # fast path: printable ASCII is all legal
        return value
    return _NOT_XML_CHAR.sub("", value)


def label_safe(value: str) -> str:
    """Text for a map label: ``xml_safe`` and without C1 or bidirectional control characters."""
    if value.isascii() and value.isprintable():
        return value
    return _NOT_LABEL_CHAR.sub("", _NOT_XML_CHAR.sub("", value))


def _uid_part(value: str) -> str:
    if value.isascii() and value.isalnum() and len(value) <= _MAX_UID_PART:
        return value  # the common part (record ids are hex): nothing to replace or cut
    return _UID_UNSAFE.sub("_", value)[:_MAX_UID_PART] or "_"


def producer_tag(producer: str) -> str:
    """A short, stable tag of the authenticated producer for track uids (not the subject itself,
    which need not be shown to every TAK user)."""
    return hashlib.sha256(producer.encode("utf-8", "surrogatepass")).hexdigest()[
        :_PRODUCER_TAG_CHARS
    ]


def detection_uid(
    *,
    record_id: str,
    camera_id: str | None,
    track_id: str | None,
    source: str | None,
    producer: str | None = None,
) -> str:
    """Stable per camera + track when the producer tracks objects, else one per detection. With
    a ``producer`` (the authenticated identity) the track uid is scoped to it, so one producer
    naming another's camera and track moves its own marker, never the other's."""
    if track_id:
        camera = _uid_part(camera_id or source or "unknown")
        scope = f"{producer_tag(producer)}." if producer else ""
        return f"{UID_PREFIX}.{scope}{camera}.track.{_uid_part(track_id)}"
    return record_uid(record_id)


def record_uid(record_id: str) -> str:
    """The uid of a detection without a track: one per record."""
    return f"{UID_PREFIX}.{_uid_part(record_id)}"


_COT_TIME = "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ"


@functools.lru_cache(maxsize=1024)  # a request's events share times: generation, capture, stale
def cot_time(moment: datetime) -> str:
    """UTC RFC 3339 with ``Z`` and milliseconds (truncated), e.g. 2026-11-27T02:40:16.123Z."""
    if moment.tzinfo is None:
        raise ValueError("CoT times need an aware datetime")
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    # printf-style: half the cost of astimezone, replace and isoformat for the time a single
    # request generates (a miss of the caches: its events share no time with earlier ones)
    return _COT_TIME % (
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond // 1000,  # truncated to milliseconds, as isoformat's timespec does
    )


@functools.lru_cache(maxsize=1024)  # a request's events share their generation time, and a
# frame's detections their capture time: one lookup instead of three, and no date arithmetic
def _event_times(
    generated_at: datetime, captured_at: datetime, stale_seconds: int
) -> tuple[str, str, str]:
    """An event's ``time``, ``start`` and ``stale``: stale ``stale_seconds`` after the later of
    generation and capture (a capture time from a fast clock still gets its full lifetime)."""
    stale = max(generated_at, captured_at) + timedelta(seconds=stale_seconds)
    return cot_time(generated_at), cot_time(captured_at), cot_time(stale)


def _require_finite(*values: float) -> None:
    # xs:decimal has no NaN/INF; fixed-point f-strings below never produce exponents.
    if not all(map(math.isfinite, values)):
        raise ValueError(f"not a finite number among {values}")


# --- events -------------------------------------------------------------------------------------


class DetectionFacts(NamedTuple):
    """What the event says about the detection besides its position (a named tuple: one is
    built per detection, at a third of a frozen dataclass's cost)."""

    record_id: str
    detection_id: str
    object_class: str
    ai_confidence: float
    camera_id: str | None = None
    track_id: str | None = None
    source: str | None = None
    image_sha256: str | None = None


def _callsign(facts: DetectionFacts) -> str:
    # The tail of an id is the part that differs between consecutive detections (counters).
    short = facts.track_id or facts.detection_id[-_CALLSIGN_ID_CHARS:]
    return f"{facts.object_class} {short}"[:_MAX_CALLSIGN]


# printf-style templates: a float through ``%`` costs three quarters of an f-string's format spec
# (the spec is parsed on every call), and the same digits: both round through
# PyOS_double_to_string ('%' multiplies by 100 first, as "{:.0%}" does).
_REMARKS = "%s %.0f%% | CE90 %.1f m LE90 %.1f m | %s"


def _remarks(facts: DetectionFacts, geo: Geolocation) -> str:
    """The remarks' character data, label-safe and escaped: each of the producer's texts made so
    (cached: a site repeats its classes and cameras); the numbers and the flag need neither.
    Both steps act character by character, so the pieces give what the whole text would."""
    remarks = _REMARKS % (
        _label_text(facts.object_class),
        facts.ai_confidence * 100,
        geo.ce90_m,
        geo.le90_m,
        geo.flag,  # str() of a StrEnum: its value, without the enum's `value` descriptor
    )
    if facts.camera_id:
        remarks += " | camera " + _label_text(facts.camera_id)
    if facts.track_id:
        remarks += " | track " + _label_text(facts.track_id)
    return remarks


@functools.lru_cache(maxsize=1024)
def _label_text(value: str) -> str:
    return _text(label_safe(value))


def _event_uid(uid: str) -> str:
    safe = xml_safe(uid)
    if not safe.strip():
        raise ValueError("a CoT event needs a non-blank uid")
    return safe


def _event_uid_attr(uid: str) -> str:
    """``_attr(_event_uid(uid))``, with one check for the uids ``detection_uid`` makes."""
    if _PLAIN.match(uid) is not None and uid.strip():
        return uid
    return _attr(_event_uid(uid))


def _attr(value: str) -> str:
    """An attribute value escaped exactly as ElementTree escapes it (``& < > "`` and the
    whitespace characters that attribute-value normalisation would otherwise turn into spaces)."""
    if _NEEDS_ESCAPE.search(value) is None:  # fast path: most values need nothing
        return value
    return _escape(value, _ATTRIBUTE_ENTITIES)


def _safe_attr(value: str) -> str:
    """``_attr(xml_safe(value))``, with one check for the common value that needs neither."""
    if _PLAIN.match(value) is not None:
        return value
    return _attr(xml_safe(value))


def _text(value: str) -> str:
    """Character data escaped exactly as ElementTree escapes it (``& < >``)."""
    return _escape(value) if _NEEDS_ESCAPE.search(value) else value


def _optional_attr(name: str, value: str | None) -> str:
    """`` name="value"`` (XML-safe, escaped) when there is a value, else nothing."""
    return "" if value is None else f' {name}="{_safe_attr(value)}"'


# Values a site repeats in event after event (its classes, cameras, sources, CoT types), made safe
# once: a cache hit costs a quarter of the regular expressions' work on the value.
@functools.lru_cache(maxsize=1024)
def _repeated_attr(value: str) -> str:
    return _safe_attr(value)


@functools.lru_cache(maxsize=1024)
def _optional_repeated_attr(name: str, value: str | None) -> str:
    return _optional_attr(name, value)


@functools.lru_cache(maxsize=1024)
def _sensor_link(camera_or_source: str) -> str:
    """The ``<link>`` naming the camera (or source), empty when it has no visible text."""
    sensor = label_safe(camera_or_source)
    if not sensor.strip():
        return ""
    return f'<link uid="{_attr(sensor)}" type="{SENSOR_LINK_TYPE}" relation="p-p" />'


@functools.lru_cache(maxsize=256)
def _checked_type(cot_type: str) -> str:
    if not is_cot_type(cot_type):
        raise ValueError(f"not a CoT type: {cot_type!r}")
    return cot_type


_EVENT = (
    f'<event version="{COT_VERSION}" uid="%s" type="%s" time="%s" start="%s" stale="%s"'
    f' how="{HOW_MACHINE_IMAGERY}">'
    '<point lat="%.7f" lon="%.7f" hae="%.2f" ce="%.2f" le="%.2f" />'
    '<detail><contact callsign="%s" /><remarks>%s</remarks>%s'
    f'<{DETAIL_ELEMENT} id="%s" record="%s" class="%s" confidence="%.3f" ce90="%.2f"'
    ' le90="%.2f" flag="%s"%s%s%s slant_range="%.2f" ground_distance="%.2f"%s'
    # which ground the hit lies on: the DEM (and its raster) or the flat ground plane
    ' terrain="%s"%s%s /></detail></event>'
)


def build_detection_event(
    *,
    uid: str,
    cot_type: str,
    geolocation: Geolocation,
    facts: DetectionFacts,
    generated_at: datetime,
    captured_at: datetime,
    stale_seconds: int = 300,
) -> str:
    """The CoT event of one geolocated detection, as an XML string without declaration.

    Written from a template: every producer-supplied value first loses what XML 1.0 cannot carry
    (``xml_safe``/``label_safe``), then is escaped (``_attr``/``_text``); numbers are fixed-point
    and the CoT type is checked against its pattern, so neither can need escaping. The output is
    byte-for-byte what ElementTree produced for the same tree (tests/test_cot_template.py
    compares the two), at a fifth of the cost.
    """
    cot_type = _checked_type(cot_type)
    event_uid = _event_uid_attr(uid)
    geo = geolocation
    ce, le = min(geo.ce_m, TAK_UNKNOWN_ERROR), min(geo.le_m, TAK_UNKNOWN_ERROR)
    numbers = (
        geo.lat_deg,
        geo.lon_deg,
        geo.hae_m,
        ce,
        le,
        geo.ce90_m,
        geo.le90_m,
        geo.slant_range_m,
        geo.ground_distance_m,
        facts.ai_confidence,
    )
    # One test for the common case: a sum of finite numbers is finite unless it overflows, and
    # a NaN or an infinity makes it NaN or infinite; only then is each number looked at.
    if not math.isfinite(sum(numbers)):
        _require_finite(*numbers)
    generated, started, stale = _event_times(generated_at, captured_at, stale_seconds)
    return _EVENT % (
        event_uid,
        cot_type,
        generated,
        started,
        stale,
        geo.lat_deg,
        geo.lon_deg,
        geo.hae_m,
        ce,
        le,
        _attr(label_safe(_callsign(facts))),
        _remarks(facts, geo),
        _sensor_link(facts.camera_id or facts.source or ""),
        _safe_attr(facts.detection_id),
        _safe_attr(facts.record_id),
        _repeated_attr(facts.object_class),
        facts.ai_confidence,
        geo.ce90_m,
        geo.le90_m,
        geo.flag,
        _optional_repeated_attr("camera", facts.camera_id),
        _optional_attr("track", facts.track_id),
        _optional_repeated_attr("source", facts.source),
        geo.slant_range_m,
        geo.ground_distance_m,
        _optional_attr("image_sha256", facts.image_sha256),
        geo.terrain,
        _optional_repeated_attr("dem", geo.dem),
        _optional_attr("terrain_note", geo.terrain_note),
    )


def build_ping(uid: str, now: datetime, *, stale_seconds: int = 60) -> bytes:
    """TAK ping (``t-x-c-t``): the server answers ``t-x-c-t-r``, the only application-level
    acknowledgement on the streaming protocol. UTF-8 bytes without XML declaration."""
    stamp = cot_time(now)
    event = ET.Element(
        "event",
        {
            "version": COT_VERSION,
            "uid": _event_uid(uid),
            "type": PING_TYPE,
            "time": stamp,
            "start": stamp,
            "stale": cot_time(now + timedelta(seconds=stale_seconds)),
            "how": "m-g",
        },
    )
    unknown = f"{TAK_UNKNOWN_ERROR:.1f}"
    ET.SubElement(
        event, "point", {"lat": "0.0", "lon": "0.0", "hae": "0.0", "ce": unknown, "le": unknown}
    )
    ET.SubElement(event, "detail")
    return ET.tostring(event, encoding="utf-8", xml_declaration=False)
