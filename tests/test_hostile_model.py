"""Hostile payloads against the payload model and the core pipeline, in process (no server).

The promise (README "HTTP API"): bad input is a 4xx problem, never a 500. Here that means
- ``parse_detection`` raises nothing but ``pydantic.ValidationError``, whatever JSON value it gets
  (NaN, infinities, huge numbers, odd unicode, deep nesting, wrong types), and its errors turn into
  problem members that serialise;
- what the model accepts is storable (valid UTF-8) and is either placed, with finite numbers and a
  CoT event that parses, or refused with ``GeolocationError`` (422). A ``ValueError`` or anything
  else escaping ``process_detection`` would be a 500 in the HTTP layer.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree
from pydantic import ValidationError

from detection_api.app.problems import validation_errors
from detection_api.core import CoreConfig, ProcessedDetection, process_detection
from detection_api.geo.types import GeolocationError
from detection_api.model import Detection, SensorMetadata, parse_detection

EXAMPLE = json.loads(
    (Path(__file__).resolve().parent.parent / "examples" / "detection.json").read_text()
)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
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
