"""The detection payload model: what it accepts, what it refuses (with which field path), the
image digest, the geometry inputs and the JSON Schema."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree
from pydantic import AwareDatetime, TypeAdapter, ValidationError

from detection_api.app.problems import validation_errors
from detection_api.core import CoreConfig, ProcessedDetection, process_detection
from detection_api.geo.locate import DEFAULT_SIGMAS
from detection_api.geo.types import GeolocationError
from detection_api.model import (
    DETECTION_SCHEMA_ID,
    Detection,
    SensorMetadata,
    detection_json_schema,
    parse_detection,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


def payload(**overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(load("detection.json"))
    meta_overrides = overrides.pop("sensor_metadata", {})
    data.update(overrides)
    data["sensor_metadata"].update(meta_overrides)
    return data


def without(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for key in keys:
        if "." in key:
            outer, inner = key.split(".")
            data[outer].pop(inner, None)
        else:
            data.pop(key, None)
    return data


def error_locs(data: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        parse_detection(data, now=NOW, **kwargs)
    return [tuple(e["loc"]) for e in info.value.errors()]


def error_messages(data: Any, **kwargs: Any) -> str:
    with pytest.raises(ValidationError) as info:
        parse_detection(data, now=NOW, **kwargs)
    return " | ".join(e["msg"] for e in info.value.errors())


# --- accepted payloads ----------------------------------------------------------------------------


def test_examples_are_valid() -> None:
    det = parse_detection(load("detection.json"), now=NOW)
    assert det.object_class == "vehicle"
    assert det.pixel == (1184.5, 742.0)
    for item in load("batch.json"):
        parse_detection(item, now=NOW)
    v1 = parse_detection(load("v1-detection.json"), now=NOW)
    assert v1.pixel == (640.0, 500.0)
    assert v1.sensor_metadata.ground_elevation == 0.0


def test_v1_payload_gets_documented_default_sigmas() -> None:
    inputs = parse_detection(load("v1-detection.json"), now=NOW).geometry_inputs()
    assert inputs.sigmas == DEFAULT_SIGMAS


def test_geometry_inputs_carry_the_payload() -> None:
    det = parse_detection(payload(sensor_metadata={"principal_x": 950.0}), now=NOW)
    pose, intrinsics, pixel_x, pixel_y, sigmas = det.geometry_inputs()
    assert (pose.lat_deg, pose.lon_deg) == (51.2185312, -1.8052475)
    assert pose.height_above_ground_m == 120.0
    assert pose.ground_hae_m == 177.0
    assert (pose.heading_deg, pose.pitch_deg, pose.roll_deg) == (135.0, -35.0, 0.8)
    assert intrinsics.focal_px == 1400.0
    assert (intrinsics.width_px, intrinsics.height_px) == (1920.0, 1080.0)
    assert (intrinsics.cx_px, intrinsics.cy_px) == (950.0, 540.0)  # cy defaults to H/2
    assert (pixel_x, pixel_y) == (1184.5, 742.0)
    assert (sigmas.position_m, sigmas.altitude_m, sigmas.pixel) == (2.5, 3.0, 2.0)


def test_absent_sigmas_take_the_defaults_individually() -> None:
    data = without(payload(), "sensor_metadata.heading_sigma_deg", "sensor_metadata.pixel_sigma")
    sigmas = parse_detection(data, now=NOW).geometry_inputs().sigmas
    assert sigmas.heading_deg == DEFAULT_SIGMAS.heading_deg
    assert sigmas.pixel == DEFAULT_SIGMAS.pixel
    assert sigmas.position_m == 2.5


def test_zero_sigma_is_allowed() -> None:
    det = parse_detection(payload(sensor_metadata={"pixel_sigma": 0}), now=NOW)
    assert det.geometry_inputs().sigmas.pixel == 0.0


def test_bbox_only_uses_the_bottom_centre() -> None:
    data = without(payload(bbox=[100.0, 200.0, 300.0, 450.0]), "pixel_x", "pixel_y")
    det = parse_detection(data, now=NOW)
    assert det.pixel_x is None
    assert det.pixel == (200.0, 450.0)
    assert det.geometry_inputs()[2:4] == (200.0, 450.0)


def test_explicit_pixel_wins_over_bbox() -> None:
    det = parse_detection(payload(pixel_x=10.0, pixel_y=20.0, bbox=[0, 0, 100, 100]), now=NOW)
    assert det.pixel == (10.0, 20.0)


def test_pixel_on_the_image_border_is_inside() -> None:
    det = parse_detection(payload(pixel_x=1920, pixel_y=0, bbox=None), now=NOW)
    assert det.pixel == (1920.0, 0.0)


def test_focal_length_from_millimetres() -> None:
    data = without(payload(), "sensor_metadata.focal_length")
    data["sensor_metadata"].update(focal_length_mm=8.8, sensor_width_mm=13.2)
    det = parse_detection(data, now=NOW)
    assert det.sensor_metadata.focal_length == pytest.approx(8.8 / 13.2 * 1920)


def test_focal_length_in_pixels_wins_over_millimetres() -> None:
    data = payload(sensor_metadata={"focal_length_mm": 8.8, "sensor_width_mm": 13.2})
    assert parse_detection(data, now=NOW).sensor_metadata.focal_length == 1400.0


def test_unknown_fields_are_ignored_at_every_level() -> None:
    data = payload(extra="x", nested={"a": [1, 2]}, sensor_metadata={"gimbal_mode": "follow"})
    det = parse_detection(data, now=NOW)
    assert "extra" not in det.model_dump()
    assert "gimbal_mode" not in det.sensor_metadata.model_dump()


def test_integer_track_id_becomes_text() -> None:
    assert parse_detection(payload(track_id=42), now=NOW).track_id == "42"


def test_image_sizes_given_as_whole_floats_are_accepted() -> None:
    det = parse_detection(payload(sensor_metadata={"image_width": 1920.0}), now=NOW)
    assert det.sensor_metadata.image_width == 1920


def test_object_class_is_stripped() -> None:
    assert parse_detection(payload(object_class="  car "), now=NOW).object_class == "car"


def test_timestamp_keeps_its_offset_and_is_aware() -> None:
    det = parse_detection(payload(timestamp="2026-11-26T15:05:09.25+01:00"), now=NOW)
    assert det.timestamp.utcoffset() == timedelta(hours=1)
    assert det.timestamp.astimezone(UTC) == datetime(2026, 11, 26, 14, 5, 9, 250_000, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2026, 11, 28, 11)),
    fraction=st.text("0123456789", max_size=9),
    separator=st.sampled_from("Tt "),
)
@example(moment=datetime(2024, 2, 29), fraction="9999999", separator="T")
def test_z_timestamps_are_the_instants_pydantic_parses_in_utc(
    moment: datetime, fraction: str, separator: str
) -> None:
    # Z times take the standard library's parse (model/fields.py): the same instant and
    # microseconds as pydantic's own parse, which every other offset still takes.
    text = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S") + (f".{fraction}" if fraction else "")
    det = parse_detection(payload(timestamp=text + "Z"), now=NOW)
    by_pydantic = TypeAdapter(AwareDatetime).validate_python(text + "Z")
    assert det.timestamp == by_pydantic
    assert det.timestamp.replace(tzinfo=None) == by_pydantic.replace(tzinfo=None)
    assert det.timestamp.tzinfo is UTC
    offset = parse_detection(payload(timestamp=text + "+00:00"), now=NOW).timestamp
    assert offset == by_pydantic and offset.utcoffset() == timedelta(0)


def test_a_z_date_that_does_not_exist_gets_pydantics_error() -> None:
    data = payload(timestamp="2026-02-29T12:00:00Z")
    assert error_locs(data) == [("timestamp",)]
    assert "datetime" in error_messages(data)


def test_timestamp_slightly_ahead_of_the_clock_is_accepted() -> None:
    ahead = (NOW + timedelta(hours=23)).isoformat()
    parse_detection(payload(timestamp=ahead), now=NOW)


def test_validation_from_json_text() -> None:
    text = json.dumps(load("detection.json"))
    det = Detection.model_validate_json(text, context={"now": NOW})
    assert det.pixel == (1184.5, 742.0)
    with pytest.raises(ValidationError) as info:
        Detection.model_validate_json(text.replace("1184.5", "NaN"), context={"now": NOW})
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("pixel_x",)]


# --- the image ------------------------------------------------------------------------------------


def test_image_is_replaced_by_its_sha256() -> None:
    image = bytes(range(256)) * 10
    encoded = base64.b64encode(image).decode()
    det = parse_detection(payload(image_base64=encoded), now=NOW)
    assert det.image_sha256 == hashlib.sha256(image).hexdigest()
    dumped = json.dumps(det.model_dump(mode="json"))
    assert encoded not in dumped
    assert encoded not in repr(det)
    assert "image_base64" not in det.model_dump()


def test_data_url_images_are_accepted() -> None:
    det = parse_detection(payload(image_base64="data:image/jpeg;base64,aGVsbG8="), now=NOW)
    assert det.image_sha256 == hashlib.sha256(b"hello").hexdigest()


def test_a_client_cannot_set_the_digest() -> None:
    assert parse_detection(payload(image_sha256="f" * 64), now=NOW).image_sha256 is None


def test_image_cap_is_exact() -> None:
    image = b"x" * 1000
    encoded = base64.b64encode(image).decode()
    parse_detection(payload(image_base64=encoded), now=NOW, max_image_bytes=1000)
    assert error_locs(payload(image_base64=encoded), max_image_bytes=999) == [("image_base64",)]
    assert "larger than 999 bytes" in error_messages(
        payload(image_base64=encoded), max_image_bytes=999
    )


def test_image_cap_zero_refuses_images() -> None:
    locs = error_locs(payload(image_base64="aGVsbG8="), max_image_bytes=0)
    assert locs == [("image_base64",)]


def test_huge_image_is_refused_before_decoding() -> None:
    huge = "A" * 5_000_000  # valid base64 characters, far above the default cap
    assert "larger than" in error_messages(payload(image_base64=huge))


@pytest.mark.parametrize("bad", ["not base64!", "aGVsbG8", 12, ["aGVsbG8="]])
def test_invalid_image_is_refused(bad: Any) -> None:
    assert error_locs(payload(image_base64=bad)) == [("image_base64",)]


# --- refused payloads: each error names its field -------------------------------------------------


def test_required_fields() -> None:
    locs = set(error_locs({}))
    assert locs == {("object_class",), ("ai_confidence",), ("timestamp",), ("sensor_metadata",)}
    # "pixel or bbox" is a cross-field rule: checked once the fields are valid (below)


def test_cross_field_rules_are_checked_once_the_fields_are_valid() -> None:
    # One model validator per model checks them all, and reports all of its errors at once.
    data = payload(timestamp="2026-11-26", pixel_x=5000.0, bbox=[10, 10, 5, 20])
    assert error_locs(data) == [("timestamp",)]
    data["timestamp"] = "2026-11-26T14:05:09Z"
    assert error_locs(data) == [("bbox",), ("pixel_x",)]
    meta = {"location_elevation": 0.001, "principal_y": 1081.0, "heading": 400}
    data = without(payload(sensor_metadata=meta), "sensor_metadata.focal_length")
    assert error_locs(data) == [("sensor_metadata", "heading")]
    data["sensor_metadata"]["heading"] = 90
    assert error_locs(data) == [
        ("sensor_metadata", "location_elevation"),
        ("sensor_metadata", "focal_length"),
        ("sensor_metadata", "principal_y"),
    ]


@pytest.mark.parametrize(
    "field",
    [
        "location_lat",
        "location_lon",
        "location_elevation",
        "heading",
        "pitch",
        "roll",
        "image_width",
        "image_height",
    ],
)
def test_required_sensor_fields(field: str) -> None:
    assert error_locs(without(payload(), f"sensor_metadata.{field}")) == [
        ("sensor_metadata", field)
    ]


def test_focal_length_is_required_in_some_form() -> None:
    data = without(payload(), "sensor_metadata.focal_length")
    assert error_locs(data) == [("sensor_metadata", "focal_length")]
    data["sensor_metadata"]["focal_length_mm"] = 8.8  # without the sensor width: still missing
    assert error_locs(data) == [("sensor_metadata", "focal_length")]


def test_pixel_or_bbox_is_required() -> None:
    data = without(payload(), "pixel_x", "pixel_y", "bbox")
    assert error_locs(data) == [("pixel_x",), ("pixel_y",)]
    assert "required unless bbox" in error_messages(data)


@pytest.mark.parametrize("missing", ["pixel_x", "pixel_y"])
def test_half_a_pixel_is_refused(missing: str) -> None:
    assert error_locs(without(payload(), missing)) == [("pixel_y",)]
    assert "given together" in error_messages(without(payload(), missing))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("sensor_metadata.location_lat", 90.0001),
        ("sensor_metadata.location_lat", -90.5),
        ("sensor_metadata.location_lon", 180.0001),
        ("sensor_metadata.location_lon", -181),
        ("sensor_metadata.location_elevation", 0),
        ("sensor_metadata.location_elevation", -5),
        ("sensor_metadata.heading", 360),
        ("sensor_metadata.heading", -0.1),
        ("sensor_metadata.pitch", -90.01),
        ("sensor_metadata.pitch", 91),
        ("sensor_metadata.roll", -180),
        ("sensor_metadata.roll", 180.5),
        ("sensor_metadata.focal_length", 0),
        ("sensor_metadata.image_width", 0),
        ("sensor_metadata.image_width", 1920.5),
        ("sensor_metadata.image_height", 100_001),
        ("sensor_metadata.principal_x", 1920.5),
        ("sensor_metadata.principal_y", -1),
        ("sensor_metadata.pixel_sigma", -0.1),
        ("sensor_metadata.heading_sigma_deg", 91),
        ("sensor_metadata.ground_elevation", 20_000),
        ("ai_confidence", 1.01),
        ("ai_confidence", -0.01),
        ("pixel_x", -1),
        ("pixel_x", 1920.01),
        ("pixel_y", 1080.5),
        ("bbox", [10, 10, 5, 20]),
        ("bbox", [10, 10, 20, 10]),
        ("bbox", [10, 10, 20, 1081]),
        ("bbox", [-1, 10, 20, 30]),
        ("bbox", [1, 2, 3]),
        ("object_class", ""),
        ("object_class", "   "),
        ("object_class", "c" * 65),
        ("object_class", "car\nx"),
        ("source", "s" * 257),
        ("source", "tab\there"),
        ("camera_id", "cam 1"),
        ("camera_id", "cam/1"),
        ("track_id", "t" * 129),
        ("track_id", True),
        ("detection_id", "<id>"),
    ],
)
def test_out_of_range_values_name_their_field(path: str, value: Any) -> None:
    data = payload()
    if "." in path:
        outer, inner = path.split(".")
        data[outer][inner] = value
    else:
        data[path] = value
    locs = error_locs(data)
    assert locs and all(loc[: len(path.split("."))] == tuple(path.split(".")) for loc in locs), locs


NUMERIC_SENSOR_FIELDS = [
    "location_lat",
    "location_lon",
    "location_elevation",
    "ground_elevation",
    "heading",
    "pitch",
    "roll",
    "focal_length",
    "position_sigma_m",
    "pixel_sigma",
]


@pytest.mark.parametrize("field", NUMERIC_SENSOR_FIELDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "10", True, [1.0]])
def test_numbers_must_be_finite_json_numbers(field: str, bad: Any) -> None:
    data = payload(sensor_metadata={field: bad})
    assert error_locs(data) == [("sensor_metadata", field)]


@pytest.mark.parametrize("field", ["location_lat", "heading", "pitch", "roll", "image_width"])
def test_required_numbers_cannot_be_null(field: str) -> None:
    assert error_locs(payload(sensor_metadata={field: None})) == [("sensor_metadata", field)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.5", False])
def test_confidence_and_pixel_must_be_finite_numbers(bad: Any) -> None:
    assert error_locs(payload(ai_confidence=bad)) == [("ai_confidence",)]
    assert ("pixel_x",) in error_locs(payload(pixel_x=bad))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-11-26T14:05:09", "UTC offset"),
        ("2026-11-26T14:05:09.250", "UTC offset"),
        ("2026-11-26", "RFC 3339"),
        ("yesterday", "RFC 3339"),
        ("1764165909", "RFC 3339"),
        (1764165909, "RFC 3339"),
        ("2026-13-26T14:05:09Z", "datetime"),
        ("2026-11-28T12:00:01Z", "in the future"),
        ("0001-01-01T00:00:00+01:00", "before 1970"),
        ("1969-12-31T23:59:59.999Z", "before 1970"),
    ],
)
def test_bad_timestamps(value: Any, message: str) -> None:
    data = payload(timestamp=value)
    assert error_locs(data) == [("timestamp",)]
    assert message in error_messages(data)


def test_errors_have_their_own_types_and_plain_messages() -> None:
    with pytest.raises(ValidationError) as info:
        parse_detection(payload(pixel_x=5000.0), now=NOW)
    [error] = info.value.errors()
    assert error["loc"] == ("pixel_x",)
    assert error["type"] == "outside_image"
    assert error["msg"] == "must be inside the image (0 ≤ pixel_x ≤ 1920)"
    with pytest.raises(ValidationError) as info:
        parse_detection(without(payload(), "pixel_x", "pixel_y", "bbox"), now=NOW)
    assert [e["msg"] for e in info.value.errors()] == [
        "pixel_x is required unless bbox is given",
        "pixel_y is required unless bbox is given",
    ]


def test_future_bound_uses_the_clock_without_context() -> None:
    far = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    with pytest.raises(ValidationError):
        Detection.model_validate(payload(timestamp=far))


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(ValidationError):
        parse_detection([load("detection.json")], now=NOW)


# --- JSON Schema ----------------------------------------------------------------------------------


@functools.cache
def schema_validator() -> jsonschema.Draft202012Validator:
    schema = detection_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_identity_and_requirements() -> None:
    schema = detection_json_schema()
    assert schema["$id"] == DETECTION_SCHEMA_ID
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) == {
        "object_class",
        "ai_confidence",
        "timestamp",
        "sensor_metadata",
    }
    assert "image_base64" in schema["properties"]
    assert "image_sha256" not in schema["properties"]
    json.dumps(schema)  # JSON-serialisable


def test_examples_satisfy_the_schema() -> None:
    validator = schema_validator()
    validator.validate(load("detection.json"))
    validator.validate(load("v1-detection.json"))
    for item in load("batch.json"):
        validator.validate(item)


@pytest.mark.parametrize(
    "bad",
    [
        without(payload(), "pixel_x", "pixel_y", "bbox"),
        without(payload(), "sensor_metadata.focal_length"),
        payload(ai_confidence=2),
        payload(sensor_metadata={"heading": 360}),
        payload(sensor_metadata={"image_width": "1920"}),
        payload(camera_id="a b"),
        payload(pixel_x=None, pixel_y=None, bbox=None),
    ],
)
def test_schema_refuses_what_the_model_refuses(bad: dict[str, Any]) -> None:
    assert list(schema_validator().iter_errors(bad))
    with pytest.raises(ValidationError):
        parse_detection(bad, now=NOW)


finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def valid_payloads(draw: st.DrawFn) -> dict[str, Any]:
    width = draw(st.integers(1, 8000))
    height = draw(st.integers(1, 8000))
    meta: dict[str, Any] = {
        "location_lat": draw(st.floats(-90, 90)),
        "location_lon": draw(st.floats(-180, 180)),
        "location_elevation": draw(st.floats(0.01, 100_000)),
        "heading": draw(st.floats(0, 360, exclude_max=True)),
        "pitch": draw(st.floats(-90, 90)),
        "roll": draw(st.floats(-180, 180, exclude_min=True)),
        "image_width": width,
        "image_height": height,
        "focal_length": draw(st.floats(0.01, 1e7)),
    }
    if draw(st.booleans()):
        meta["pixel_sigma"] = draw(st.floats(0, 100))
    data: dict[str, Any] = {
        "object_class": draw(st.sampled_from(["car", "person", "Boat", "unknown thing"])),
        "ai_confidence": draw(st.floats(0, 1)),
        "timestamp": "2026-11-26T14:05:09.250Z",
        "track_id": draw(st.one_of(st.none(), st.integers(0, 10**6), st.just("T-9"))),
        "sensor_metadata": meta,
    }
    if draw(st.booleans()):
        data["pixel_x"] = draw(st.floats(0, width))
        data["pixel_y"] = draw(st.floats(0, height))
    else:
        x0 = draw(st.floats(0, width, exclude_max=True))
        y0 = draw(st.floats(0, height, exclude_max=True))
        x1 = draw(st.floats(x0, width, exclude_min=True))
        y1 = draw(st.floats(y0, height, exclude_min=True))
        data["bbox"] = [x0, y0, x1, y1]
    return data


@settings(max_examples=200, deadline=None)
@given(data=valid_payloads())
def test_model_and_schema_agree_on_valid_payloads(data: dict[str, Any]) -> None:
    det = parse_detection(data, now=NOW)
    schema_validator().validate(data)
    x, y = det.pixel
    assert 0 <= x <= det.sensor_metadata.image_width
    assert 0 <= y <= det.sensor_metadata.image_height


# -- every string that arrives is bounded (issue 10) ----------------------------------------------


def _strings(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "string":
            found.append((path, node))
        for key, value in node.items():
            found.extend(_strings(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_strings(value, f"{path}[{index}]"))
    return found


def test_every_string_field_has_a_bound() -> None:
    from detection_api.model import detection_json_schema

    unbounded = [
        p for p, s in _strings(detection_json_schema()) if "maxLength" not in s and "enum" not in s
    ]
    # Enumerations are bounded by their values. The two without maxLength are bounded otherwise:
    # the timestamp by its RFC 3339 pattern, the image by max_image_bytes (checked below).
    assert sorted(unbounded) == ["/properties/image_base64/anyOf[0]", "/properties/timestamp"]
    assert error_locs(payload(timestamp="2026-11-26T14:05:09" + "9" * 10_000 + "Z")) == [
        ("timestamp",)
    ]
    big = base64.b64encode(b"x" * 1025).decode()
    assert error_locs(payload(image_base64=big), max_image_bytes=1024) == [("image_base64",)]


# --- hostile input (formerly test_hostile_model.py) -----------------------------------------------
# Hostile payloads against the payload model and the core pipeline, in process (no server).
#
# The promise (README "HTTP API"): bad input is a 4xx problem, never a 500. Here that means
# - ``parse_detection`` raises nothing but ``pydantic.ValidationError``, whatever JSON value it gets
#   (NaN, infinities, huge numbers, odd unicode, deep nesting, wrong types), and its errors turn
#   into problem members that serialise;
# - what the model accepts is storable (valid UTF-8) and is either placed, with finite numbers and a
#   CoT event that parses, or refused with ``GeolocationError`` (422). A ``ValueError`` or anything
#   else escaping ``process_detection`` would be a 500 in the HTTP layer.


EXAMPLE = json.loads(
    (Path(__file__).resolve().parent.parent / "examples" / "detection.json").read_text()
)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- hostile values ---------------------------------------------------------------------------

ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "nul\x00inside",
    "\ud800",  # lone high surrogate (valid JSON as "\\ud800", not valid UTF-8)
    "\udfff\ud800",  # reversed pair
    "\u202egnp.exe",  # right-to-left override
    "\u200b",  # zero-width space
    "\ufeffbom",
    "\ufffe\uffff",  # noncharacters
    "\U0001f697\U0001f4a5",  # emoji
    "a\u0301\u0301\u0301",  # stacked combining marks
    "& < > \" ' ]]> <!-- --> <![CDATA[x]]>",
    "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>&e;",
    "\r\n\t",
    "\x85\u2028\u2029",  # NEL, line and paragraph separators
    "NaN",
    "Infinity",
    "1e999",
    "x" * 10_000,
]
ODD_NUMBERS: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    5e-324,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    2**53 + 1,
    2**64,
    -(2**63) - 1,
    10**400,
    True,
    False,
]

odd_text = st.one_of(
    st.sampled_from(ODD_STRINGS),
    # every code point category, lone surrogates (Cs) included
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),
)
odd_numbers = st.one_of(
    st.sampled_from(ODD_NUMBERS), st.integers(), st.floats(), st.floats(-1e6, 1e6)
)
json_scalars = st.one_of(st.none(), st.booleans(), odd_numbers, odd_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(odd_text, inner, max_size=5)
    ),
    max_leaves=25,
)

FIELD_PATHS: list[tuple[str, ...]] = [
    *[(name,) for name in EXAMPLE if name != "sensor_metadata"],
    ("sensor_metadata",),
    *[("sensor_metadata", name) for name in EXAMPLE["sensor_metadata"]],
    *[
        ("sensor_metadata", name)
        for name in (
            "focal_length_mm",
            "sensor_width_mm",
            "principal_x",
            "principal_y",
        )
    ],
    ("image_base64",),
    ("track_id",),
    ("bbox", "0"),
    ("bbox", "3"),
    ("an_unknown_field",),
]


def with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    if isinstance(target, list):
        target[int(path[-1])] = value
    else:
        target[path[-1]] = value
    return data


def nested(depth: int, leaf: Any = 1.0) -> Any:
    """A list nested ``depth`` deep, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# --- assertions shared by the tests -------------------------------------------------------------


def parse_or_refuse(data: Any) -> Detection | None:
    """The model's answer: a Detection, or None after a ValidationError whose problem members
    serialise (that is what the HTTP layer sends). Any other exception fails the test."""
    try:
        return parse_detection(data, now=NOW)
    except ValidationError as exc:
        members = validation_errors(exc.errors())
        assert members
        json.dumps(members).encode("utf-8")
        return None


def assert_storable(det: Detection) -> None:
    # Records and jobs are written to Redis as UTF-8: a lone surrogate would fail there (a 500).
    for name in ("object_class", "source", "camera_id", "track_id", "detection_id"):
        value = getattr(det, name)
        if value is not None:
            value.encode("utf-8")
    assert all(math.isfinite(v) for v in det.pixel)


def place_or_refuse(det: Detection, config: CoreConfig | None = None) -> ProcessedDetection | None:
    try:
        result = process_detection(
            det, config or CoreConfig(), record_id="r-1", detection_id="d-1", now=NOW
        )
    except GeolocationError:
        return None  # 422 with its reason
    geo = result.geolocation
    numbers = (geo.lat_deg, geo.lon_deg, geo.hae_m, geo.slant_range_m, geo.ground_distance_m)
    assert all(math.isfinite(v) for v in numbers), geo
    for error in (geo.ce90_m, geo.le90_m, geo.ce_m, geo.le_m, *geo.covariance_en_m2[::2]):
        assert math.isfinite(error) and error >= 0.0, geo
    etree.fromstring(result.cot_xml.encode("utf-8"))  # strict XML 1.0
    return result


# --- any JSON value ----------------------------------------------------------------------------


@FUZZ
@given(value=json_values)
@example(value=None)
@example(value=[EXAMPLE])
@example(value={"sensor_metadata": {}})
def test_any_json_value_is_a_detection_or_a_validation_error(value: Any) -> None:
    parse_or_refuse(value)


@FUZZ
@given(path=st.sampled_from(FIELD_PATHS), value=json_values)
@example(path=("object_class",), value="\ud800car")
@example(path=("source",), value="\u202e\x85")
@example(path=("timestamp",), value="0001-01-01T00:00:00+23:59")
@example(path=("timestamp",), value="9999-12-31T23:59:59-23:59")
@example(path=("ai_confidence",), value=10**400)
@example(path=("pixel_x",), value=10**400)
@example(path=("bbox", "3"), value=math.inf)
@example(path=("sensor_metadata", "image_width"), value=10**400)
@example(path=("sensor_metadata", "focal_length"), value=5e-324)
@example(path=("sensor_metadata", "location_elevation"), value=1e-323)
@example(path=("sensor_metadata", "ground_elevation"), value=-1.0e193)
@example(path=("track_id",), value=2**200)
@example(path=("image_base64",), value="data:image/png;base64," + "A" * 999)
def test_a_hostile_value_in_any_field_is_refused_or_handled(
    path: tuple[str, ...], value: Any
) -> None:
    det = parse_or_refuse(with_value(path, value))
    if det is not None:
        assert_storable(det)
        place_or_refuse(det)


@pytest.mark.parametrize("path", FIELD_PATHS, ids=".".join)
def test_deeply_nested_values_are_refused_without_recursion_errors(path: tuple[str, ...]) -> None:
    det = parse_or_refuse(with_value(path, nested(100_000)))
    # Only an unknown field may hold anything (it is ignored); everywhere else it is an error.
    assert (det is not None) == (path == ("an_unknown_field",))


@pytest.mark.parametrize(
    ("path", "value"), [(("object_class",), "\ud800"), (("source",), "a\udc00")]
)
def test_lone_surrogates_in_text_fields_are_refused(path: tuple[str, ...], value: str) -> None:
    assert parse_or_refuse(with_value(path, value)) is None


# --- whatever the model accepts, the core handles ---------------------------------------------


def _bounds(schema: dict[str, Any]) -> tuple[float, float]:
    """The closed interval of a number field, read from the model's own JSON Schema, so that
    loosening a bound in the model widens what this test explores."""
    schema = next((s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"), schema)
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    low = -1e300 if low is None else float(low)
    high = 1e300 if high is None else float(high)
    if "exclusiveMinimum" in schema:
        low = math.nextafter(low, math.inf)
    if "exclusiveMaximum" in schema:
        high = math.nextafter(high, -math.inf)
    return low, high


_META_FIELDS = SensorMetadata.model_json_schema()["properties"]
_DETECTION_FIELDS = Detection.model_json_schema()["properties"]


def _number(schema: dict[str, Any]) -> st.SearchStrategy[float]:
    low, high = _bounds(schema)
    # The extremes are where conditioning breaks: draw them (and their neighbours) often.
    edges = [low, high, math.nextafter(low, math.inf), math.nextafter(high, -math.inf)]
    return st.one_of(st.sampled_from(edges), st.floats(low, high))


def _fraction() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0))


@st.composite
def model_valid_payloads(draw: st.DrawFn) -> dict[str, Any]:
    width = int(draw(_number(_META_FIELDS["image_width"])))
    height = int(draw(_number(_META_FIELDS["image_height"])))
    meta: dict[str, Any] = {
        name: draw(_number(_META_FIELDS[name]))
        for name in (
            "location_lat",
            "location_lon",
            "location_elevation",
            "ground_elevation",
            "heading",
            "pitch",
            "roll",
            "focal_length",
        )
    }
    meta.update(image_width=width, image_height=height)
    meta["principal_x"] = draw(_fraction()) * width
    meta["principal_y"] = draw(_fraction()) * height
    for name in (
        "position_sigma_m",
        "altitude_sigma_m",
        "heading_sigma_deg",
        "pitch_sigma_deg",
        "roll_sigma_deg",
        "pixel_sigma",
    ):
        if draw(st.booleans()):
            meta[name] = draw(_number(_META_FIELDS[name]))
    return {
        "object_class": draw(st.sampled_from(["car", "person", "\u202e<&>"])),
        "ai_confidence": draw(_number(_DETECTION_FIELDS["ai_confidence"])),
        "timestamp": "2026-11-26T14:05:09.250Z",
        "pixel_x": draw(_fraction()) * width,
        "pixel_y": draw(_fraction()) * height,
        "sensor_metadata": meta,
    }


@settings(FUZZ, max_examples=600)
@given(
    data=model_valid_payloads(),
    max_range_m=st.one_of(st.sampled_from([20_000.0, 1e300]), st.floats(1e-3, 1e300)),
)
def test_every_model_valid_detection_is_placed_or_refused_with_a_reason(
    data: dict[str, Any], max_range_m: float
) -> None:
    det = parse_or_refuse(data)
    if det is not None:  # the principal point or pixel may round past the image edge
        place_or_refuse(det, CoreConfig(max_range_m=max_range_m))


@pytest.mark.parametrize(
    "meta",
    [
        # Found by the fuzz above before the model's lower bounds: a 1e-323 m camera height and a
        # 5e-324 px focal length made the uncertainty overflow into NaN (a 500 in the HTTP layer).
        {"location_elevation": 1e-323, "pitch": -3.6e-231, "focal_length": 855086.0},
        {"location_elevation": 0.01, "pitch": -83.6, "roll": 151.0, "focal_length": 5e-208},
    ],
)
def test_degenerate_cameras_are_refused_by_the_model(meta: dict[str, Any]) -> None:
    data = copy.deepcopy(EXAMPLE)
    data["sensor_metadata"].update(meta)
    assert parse_or_refuse(data) is None


def test_smallest_valid_camera_is_still_well_conditioned() -> None:
    data = copy.deepcopy(EXAMPLE)
    data["sensor_metadata"].update(location_elevation=0.01, focal_length=0.01, pitch=-1e-9)
    det = parse_or_refuse(data)
    assert det is not None
    place_or_refuse(det)
