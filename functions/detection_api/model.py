"""The detection payload: a strict pydantic v2 model, a superset of the Detection API v1 payload.

Validation rules worth knowing:

- Numbers must be JSON numbers (no strings, no booleans) and finite (no NaN/Infinity).
- ``timestamp`` is RFC 3339 with an offset (``Z`` or ``±hh:mm``); naive times are refused, and so
  are times more than ``MAX_FUTURE_SKEW`` ahead of the clock or before 1970.
- The pixel is ``pixel_x``/``pixel_y`` (both or neither); without them the bottom-centre of
  ``bbox`` (where an object meets the ground). ``Detection.pixel`` resolves the two.
- ``sensor_metadata.focal_length`` is in pixels; without it ``focal_length_mm`` and
  ``sensor_width_mm`` give ``focal_length = focal_length_mm / sensor_width_mm * image_width``.
  After validation ``focal_length`` is always set (pixels), at least ``MIN_FOCAL_LENGTH_PX``;
  ``location_elevation`` is at least ``MIN_CAMERA_HEIGHT_M``. Below these the geometry is
  ill-conditioned (its error propagation overflows), so they are a 400, not a 500 or a NaN.
- ``image_base64`` is checked (valid base64, at most ``max_image_bytes`` decoded bytes, taken from
  the validation context, default ``DEFAULT_MAX_IMAGE_BYTES``; 0 refuses images) and only its
  SHA-256 is kept, as ``image_sha256``. The image itself is never stored.
- Unknown fields are ignored (v1 producers send extras).

Error ``loc`` tuples are the field paths of the payload (``("sensor_metadata", "heading")``), so the
HTTP layer can report them as they are. Cross-field rules are checked in field validators of the
later field so that their errors also carry a field path.

Validation context keys (``Detection.model_validate(data, context={...})``): ``max_image_bytes``
(int) and ``now`` (aware datetime, for the future-timestamp bound; default the system clock).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from detection_api.geo.locate import DEFAULT_SIGMAS
from detection_api.geo.types import AltitudeReference, CameraPose, InputSigmas, Intrinsics

DEFAULT_MAX_IMAGE_BYTES = 262_144  # Settings.max_image_bytes default
MAX_FUTURE_SKEW = timedelta(days=1)  # clock skew tolerated for a capture timestamp
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MAX_IMAGE_SIDE_PX = 100_000
# Lower bounds that keep the geometry well-conditioned (geo/locate.py's numeric domain): a camera
# (nearly) on the ground sees it at a grazing angle whose error propagation overflows, and a focal
# length of a few thousandths of a pixel is no lens. Both are far below any real camera.
MIN_CAMERA_HEIGHT_M = 0.01
# An ellipsoid- or geoid-referenced altitude may be negative (the Dead Sea shore is -430 m MSL).
MIN_CAMERA_ALTITUDE_M = -1_000.0
MIN_FOCAL_LENGTH_PX = 0.01
MAX_FOCAL_LENGTH_PX = 1e7
MAX_TEXT_LENGTH = 256
MAX_CLASS_LENGTH = 64
MAX_ID_LENGTH = 128
# The `$id` of the JSON Schema, used as the CloudEvent `dataschema` attribute.
DETECTION_SCHEMA_ID = "urn:detection-api:schema:detection:1"

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?$"
)
_HAS_OFFSET = re.compile(r"([Zz]|[+-]\d{2}:\d{2})$")
_DATA_URL_PREFIX = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,")
_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
_NO_CONTROL_CHARS = r"^[^\x00-\x1f\x7f]*$"


def _invalid(error_type: str, message: str, **context: Any) -> PydanticCustomError:
    """A validation error with its own type and a plain message (no "Value error, " prefix)."""
    return PydanticCustomError(error_type, message, context or None)


def _outside_image(field: str, limit: int) -> PydanticCustomError:
    message = "must be inside the image (0 ≤ {field} ≤ {limit})"
    return _invalid("outside_image", message, field=field, limit=limit)


# --- reusable field types ----------------------------------------------------------------------


def _json_number(value: Any) -> Any:
    # bool is an int subclass in Python; a JSON true is never a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid("number_type", "must be a JSON number")
    return value


def _id_text(value: Any) -> Any:
    # Trackers commonly emit integer ids; accept them as their decimal text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# Finite float; ints are accepted, strings and booleans are not.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
# Image side in pixels, given as a JSON number (1920 or 1920.0, never "1920" or true). The Field
# goes before the BeforeValidator so that pydantic puts its bounds into the JSON Schema.
ImageSide = Annotated[
    int, Field(gt=0, le=MAX_IMAGE_SIDE_PX, description="pixels"), BeforeValidator(_json_number)
]
Text = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=_NO_CONTROL_CHARS),
]
Identifier = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN),
    BeforeValidator(_id_text),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_ID_LENGTH,
                    "pattern": _ID_PATTERN,
                },
                {"type": "integer"},
            ]
        }
    ),
]
Sigma = Annotated[Finite, Field(ge=0.0)]


def _check_timestamp_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise _invalid("timestamp_type", "must be an RFC 3339 date-time string")
    if not _RFC3339.match(value):
        raise _invalid(
            "timestamp_format", "must be an RFC 3339 date-time, e.g. 2026-11-27T02:40:16.123Z"
        )
    if not _HAS_OFFSET.search(value):
        raise _invalid(
            "timestamp_offset", "must carry a UTC offset (Z or ±hh:mm); naive times are ambiguous"
        )
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_check_timestamp_text)]


def _not_blank(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise _invalid("blank", "must not be blank")
    return stripped


# --- sensor metadata ---------------------------------------------------------------------------


class SensorMetadata(BaseModel):
    """Camera pose, intrinsics and optional 1-sigma input errors."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        json_schema_extra={
            "anyOf": [
                {"required": ["focal_length"], "properties": {"focal_length": {"type": "number"}}},
                {
                    "required": ["focal_length_mm", "sensor_width_mm"],
                    "properties": {
                        "focal_length_mm": {"type": "number"},
                        "sensor_width_mm": {"type": "number"},
                    },
                },
            ]
        },
    )

    location_lat: Annotated[Finite, Field(ge=-90.0, le=90.0, description="camera latitude, °")]
    location_lon: Annotated[Finite, Field(ge=-180.0, le=180.0, description="camera longitude, °")]
    # What location_elevation is measured from (issue 11); before it, for its validator.
    altitude_reference: AltitudeReference = Field(
        default=AltitudeReference.GROUND,
        description="ground: location_elevation is above the ground below the camera (the DEM "
        "there, else ground_elevation); ellipsoid: WGS84 HAE (GNSS); geoid: above mean sea level",
    )
    location_elevation: Annotated[
        Finite,
        Field(
            ge=MIN_CAMERA_ALTITUDE_M,
            le=100_000.0,
            description="camera altitude, m, above what altitude_reference names (ground: "
            f"at least {MIN_CAMERA_HEIGHT_M})",
        ),
    ]
    ground_elevation: Annotated[
        Finite,
        Field(ge=-1_000.0, le=10_000.0, description="ground plane height above WGS84 (HAE), m"),
    ] = 0.0
    heading: Annotated[
        Finite, Field(ge=0.0, lt=360.0, description="optical axis azimuth, ° clockwise from N")
    ]
    pitch: Annotated[
        Finite, Field(ge=-90.0, le=90.0, description="optical axis elevation, ° (−90 = down)")
    ]
    roll: Annotated[
        Finite, Field(gt=-180.0, le=180.0, description="rotation about the optical axis, °")
    ]
    # Image size comes before the focal fields: their validators need it.
    image_width: ImageSide
    image_height: ImageSide
    focal_length_mm: Annotated[Finite, Field(gt=0.0, le=10_000.0)] | None = None
    sensor_width_mm: Annotated[Finite, Field(gt=0.0, le=1_000.0)] | None = None
    focal_length: (
        Annotated[
            Finite,
            Field(
                ge=MIN_FOCAL_LENGTH_PX, le=MAX_FOCAL_LENGTH_PX, description="focal length in pixels"
            ),
        ]
        | None
    ) = Field(default=None, validate_default=True)
    principal_x: Annotated[Finite, Field(ge=0.0, description="default image_width / 2")] | None = (
        None
    )
    principal_y: Annotated[Finite, Field(ge=0.0, description="default image_height / 2")] | None = (
        None
    )
    position_sigma_m: Annotated[Sigma, Field(le=10_000.0)] | None = None
    altitude_sigma_m: Annotated[Sigma, Field(le=10_000.0)] | None = None
    heading_sigma_deg: Annotated[Sigma, Field(le=90.0)] | None = None
    pitch_sigma_deg: Annotated[Sigma, Field(le=90.0)] | None = None
    roll_sigma_deg: Annotated[Sigma, Field(le=90.0)] | None = None
    pixel_sigma: Annotated[Sigma, Field(le=10_000.0)] | None = None

    @field_validator("location_elevation")
    @classmethod
    def _camera_above_ground(cls, value: float, info: ValidationInfo) -> float:
        reference = info.data.get("altitude_reference", AltitudeReference.GROUND)
        if reference == AltitudeReference.GROUND and value < MIN_CAMERA_HEIGHT_M:
            raise _invalid(
                "camera_height",
                "must be at least {minimum} m above the ground",
                minimum=MIN_CAMERA_HEIGHT_M,
            )
        return value

    @field_validator("focal_length")
    @classmethod
    def _resolve_focal_length(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None:
            return value
        mm, sensor_mm, width = (
            info.data.get("focal_length_mm"),
            info.data.get("sensor_width_mm"),
            info.data.get("image_width"),
        )
        if mm is None or sensor_mm is None:
            raise _invalid(
                "focal_length_required",
                "focal_length (pixels) is required, or focal_length_mm with sensor_width_mm",
            )
        if width is None:
            return None  # image_width itself failed; that error is reported already
        focal_px = mm / sensor_mm * width
        if not (math.isfinite(focal_px) and MIN_FOCAL_LENGTH_PX <= focal_px <= MAX_FOCAL_LENGTH_PX):
            raise _invalid(
                "focal_length_range",
                "focal_length_mm / sensor_width_mm * image_width is out of range",
            )
        return focal_px

    @field_validator("principal_x")
    @classmethod
    def _principal_x_inside(cls, value: float | None, info: ValidationInfo) -> float | None:
        width = info.data.get("image_width")
        if value is not None and width is not None and value > width:
            raise _outside_image("principal_x", width)
        return value

    @field_validator("principal_y")
    @classmethod
    def _principal_y_inside(cls, value: float | None, info: ValidationInfo) -> float | None:
        height = info.data.get("image_height")
        if value is not None and height is not None and value > height:
            raise _outside_image("principal_y", height)
        return value

    def pose(self) -> CameraPose:
        return CameraPose(
            lat_deg=self.location_lat,
            lon_deg=self.location_lon,
            height_above_ground_m=self.location_elevation,
            ground_hae_m=self.ground_elevation,
            heading_deg=self.heading,
            pitch_deg=self.pitch,
            roll_deg=self.roll,
        )

    def intrinsics(self) -> Intrinsics:
        if self.focal_length is None:  # only reachable on an unvalidated (model_construct) copy
            raise ValueError("sensor_metadata has no focal length")
        return Intrinsics(
            focal_px=self.focal_length,
            width_px=float(self.image_width),
            height_px=float(self.image_height),
            cx_px=self.image_width / 2 if self.principal_x is None else self.principal_x,
            cy_px=self.image_height / 2 if self.principal_y is None else self.principal_y,
        )

    def sigmas(self, defaults: InputSigmas = DEFAULT_SIGMAS) -> InputSigmas:
        """The given 1-sigma errors, the documented defaults for the absent ones."""
        # Spelled out rather than dataclasses.replace(): this runs once per detection.
        return InputSigmas(
            position_m=_given_or(self.position_sigma_m, defaults.position_m),
            altitude_m=_given_or(self.altitude_sigma_m, defaults.altitude_m),
            heading_deg=_given_or(self.heading_sigma_deg, defaults.heading_deg),
            pitch_deg=_given_or(self.pitch_sigma_deg, defaults.pitch_deg),
            roll_deg=_given_or(self.roll_sigma_deg, defaults.roll_deg),
            pixel=_given_or(self.pixel_sigma, defaults.pixel),
        )


def _given_or(value: float | None, default: float) -> float:
    return default if value is None else value


# --- the detection -----------------------------------------------------------------------------


class GeometryInputs(NamedTuple):
    """Arguments of ``geo.locate.locate`` for one detection."""

    pose: CameraPose
    intrinsics: Intrinsics
    pixel_x: float
    pixel_y: float
    sigmas: InputSigmas


def _context_value(info: ValidationInfo, key: str) -> Any:
    return info.context.get(key) if isinstance(info.context, dict) else None


class Detection(BaseModel):
    """One detection: what was seen, where in the image, and the camera that saw it."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        title="Detection",
        json_schema_extra={
            "anyOf": [
                {
                    "required": ["pixel_x", "pixel_y"],
                    "properties": {"pixel_x": {"type": "number"}, "pixel_y": {"type": "number"}},
                },
                {"required": ["bbox"], "properties": {"bbox": {"type": "array"}}},
            ],
        },
    )

    object_class: Annotated[
        str,
        Field(min_length=1, max_length=MAX_CLASS_LENGTH, pattern=_NO_CONTROL_CHARS),
        AfterValidator(_not_blank),
    ]
    ai_confidence: Annotated[Finite, Field(ge=0.0, le=1.0)]
    timestamp: Annotated[Timestamp, Field(description="capture time, RFC 3339 with offset")]
    source: Text | None = None
    camera_id: Identifier | None = None
    track_id: Identifier | None = Field(
        default=None, description="producer's tracker id: one CoT uid per camera + track"
    )
    detection_id: Identifier | None = None
    image_sha256: str | None = Field(
        default=None,
        validation_alias="image_base64",
        description="base64 image (size-capped); only its SHA-256 is kept",
        json_schema_extra={"contentEncoding": "base64"},
    )
    # sensor_metadata precedes bbox and pixel: their validators check them against the image size.
    sensor_metadata: SensorMetadata
    bbox: (
        Annotated[
            tuple[Finite, Finite, Finite, Finite],
            Field(description="[x_min, y_min, x_max, y_max], pixels"),
        ]
        | None
    ) = None
    pixel_x: Annotated[Finite, Field(ge=0.0)] | None = Field(default=None, validate_default=True)
    pixel_y: Annotated[Finite, Field(ge=0.0)] | None = Field(default=None, validate_default=True)

    @field_validator("timestamp")
    @classmethod
    def _plausible_time(cls, value: datetime, info: ValidationInfo) -> datetime:
        # Year-1 times would also overflow the UTC conversion of the CoT times.
        if value < EARLIEST_TIMESTAMP:
            raise _invalid("timestamp_past", "is before 1970-01-01T00:00:00Z")
        now = _context_value(info, "now") or datetime.now(UTC)
        if value > now + MAX_FUTURE_SKEW:
            raise _invalid(
                "timestamp_future",
                "is more than {hours} h in the future",
                hours=round(MAX_FUTURE_SKEW.total_seconds() / 3600),
            )
        return value

    @field_validator("image_sha256", mode="before")
    @classmethod
    def _digest_image(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _invalid("image_type", "must be a base64 string")
        cap = _context_value(info, "max_image_bytes")
        cap = DEFAULT_MAX_IMAGE_BYTES if cap is None else int(cap)
        text = _DATA_URL_PREFIX.sub("", value, count=1)
        # Refuse before decoding: base64 carries 3 bytes per 4 characters.
        if len(text) > 4 * math.ceil(cap / 3) + 4:
            raise _invalid("image_too_large", "image is larger than {cap} bytes", cap=cap)
        try:
            image = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("image_base64", "is not valid base64") from None
        if len(image) > cap:
            raise _invalid("image_too_large", "image is larger than {cap} bytes", cap=cap)
        return hashlib.sha256(image).hexdigest()

    @field_validator("bbox")
    @classmethod
    def _bbox_ordered_inside(
        cls, value: tuple[float, float, float, float] | None, info: ValidationInfo
    ) -> tuple[float, float, float, float] | None:
        if value is None:
            return None
        x_min, y_min, x_max, y_max = value
        if not (x_min < x_max and y_min < y_max):
            raise _invalid(
                "bbox_order", "must be ordered [x_min, y_min, x_max, y_max] with min < max"
            )
        meta = info.data.get("sensor_metadata")
        if meta is not None and (
            x_min < 0 or y_min < 0 or x_max > meta.image_width or y_max > meta.image_height
        ):
            raise _invalid(
                "outside_image",
                "must lie inside the image (0..{width}, 0..{height})",
                width=meta.image_width,
                height=meta.image_height,
            )
        return value

    @field_validator("pixel_x", "pixel_y")
    @classmethod
    def _pixel_given_or_bbox(cls, value: float | None, info: ValidationInfo) -> float | None:
        axis = info.field_name
        data = info.data
        # pixel_x is validated first; for pixel_y, "pixel_x" missing from data means it failed.
        if axis == "pixel_y" and "pixel_x" in data and (data["pixel_x"] is None) != (value is None):
            raise _invalid("pixel_pair", "pixel_x and pixel_y must be given together")
        if value is None:
            if "bbox" in data and data["bbox"] is None:
                raise _invalid(
                    "pixel_required", "{field} is required unless bbox is given", field=axis
                )
            return None
        meta = data.get("sensor_metadata")
        if meta is not None:
            limit = meta.image_width if axis == "pixel_x" else meta.image_height
            if value > limit:
                raise _outside_image(axis, limit)
        return value

    @property
    def pixel(self) -> tuple[float, float]:
        """The image point to locate: the given pixel, else the bottom-centre of the bbox."""
        if self.pixel_x is not None and self.pixel_y is not None:
            return self.pixel_x, self.pixel_y
        if self.bbox is None:  # only reachable on an unvalidated (model_construct) copy
            raise ValueError("detection has neither a pixel nor a bbox")
        x_min, _, x_max, y_max = self.bbox
        # Bottom-centre: where an object standing on the ground touches it.
        return (x_min + x_max) / 2, y_max

    def geometry_inputs(self, default_sigmas: InputSigmas = DEFAULT_SIGMAS) -> GeometryInputs:
        """Everything ``geo.locate.locate`` needs, absent sigmas filled from the defaults."""
        pixel_x, pixel_y = self.pixel
        meta = self.sensor_metadata
        return GeometryInputs(
            pose=meta.pose(),
            intrinsics=meta.intrinsics(),
            pixel_x=pixel_x,
            pixel_y=pixel_y,
            sigmas=meta.sigmas(default_sigmas),
        )


def parse_detection(
    data: Any,
    *,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    now: datetime | None = None,
) -> Detection:
    """Validate one payload (a dict). Raises ``pydantic.ValidationError`` with field paths."""
    context: dict[str, Any] = {"max_image_bytes": max_image_bytes}
    if now is not None:
        context["now"] = now
    return Detection.model_validate(data, context=context)


def detection_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of the payload: the CloudEvent ``dataschema``."""
    schema = Detection.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": DETECTION_SCHEMA_ID,
        **schema,
    }
