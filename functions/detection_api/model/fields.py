"""Reusable pieces of the payload model: bounds, error helpers and annotated field types.

Numbers are JSON numbers (no strings, no booleans) and finite; texts refuse control characters;
identifiers are ``[A-Za-z0-9_.:-]`` (integers accepted as their decimal text); timestamps are
RFC 3339 with an offset. Errors carry their own type and a plain message (no "Value error, ").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError, core_schema

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
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$"
)
DATA_URL_PREFIX = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,")
_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
NO_CONTROL_CHARS = r"^[^\x00-\x1f\x7f]*$"


def invalid(error_type: str, message: str, **context: Any) -> PydanticCustomError:
    """A validation error with its own type and a plain message (no "Value error, " prefix)."""
    return PydanticCustomError(error_type, message, context or None)


def field_errors(model: str, errors: list[InitErrorDetails]) -> ValidationError:
    """The errors of a model validator's cross-field rules, each at its own field path (raised
    from the validator, pydantic keeps their locations, under the model's own)."""
    return ValidationError.from_exception_data(model, errors)


def field_error(loc: tuple[str, ...], value: Any, error: PydanticCustomError) -> InitErrorDetails:
    return InitErrorDetails(type=error, loc=loc, input=value)


def outside_image(field: str, limit: int) -> PydanticCustomError:
    message = "must be inside the image (0 ≤ {field} ≤ {limit})"
    return invalid("outside_image", message, field=field, limit=limit)


# --- reusable field types ----------------------------------------------------------------------


class JsonNumber:
    """Annotation: the value must be a JSON number (an int or a float; never a bool, which is an
    int in Python, nor a numeric string) before the annotated type validates it. Checked by
    pydantic-core itself, a chain of its strict number schemas: a Python validator for the same
    check cost 0.25 us more per call (two per detection). The JSON Schema is the annotated
    type's."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        annotated = handler(source)
        number = core_schema.custom_error_schema(
            core_schema.union_schema(
                [core_schema.int_schema(strict=True), core_schema.float_schema(strict=True)]
            ),
            custom_error_type="number_type",
            custom_error_message="must be a JSON number",
        )
        return core_schema.chain_schema([number, annotated])

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # the chain's last step: the annotated type with its bounds (its first is the check)
        return handler(schema["steps"][-1])  # type: ignore[index, typeddict-item]


def id_text(value: Any) -> Any:
    # Trackers commonly emit integer ids; accept them as their decimal text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# Finite float; ints are accepted, strings and booleans are not.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
# Image side in pixels, given as a JSON number (1920 or 1920.0, never "1920" or true).
ImageSide = Annotated[int, Field(gt=0, le=MAX_IMAGE_SIDE_PX, description="pixels"), JsonNumber()]
Text = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=NO_CONTROL_CHARS),
]
Identifier = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN),
    BeforeValidator(id_text),
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


def capture_time(value: Any, parse: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    """RFC 3339 text with an offset, parsed, from 1970 to ``MAX_FUTURE_SKEW`` past the context's
    ``now`` (the clock without one). One validator for the text, the parse and the range: each
    validator pydantic calls costs a detection about 0.4 us."""
    if not isinstance(value, str):
        raise invalid("timestamp_type", "must be an RFC 3339 date-time string")
    parts = _RFC3339.match(value)
    if parts is None:
        raise invalid(
            "timestamp_format", "must be an RFC 3339 date-time, e.g. 2026-11-27T02:40:16.123Z"
        )
    if parts.group("offset") is None:
        raise invalid(
            "timestamp_offset", "must carry a UTC offset (Z or ±hh:mm); naive times are ambiguous"
        )
    moment: datetime | None = None
    if value[-1] == "Z":
        # The common form, parsed by the standard library into its UTC object: pydantic's parse
        # gives the same instant with its own TzInfo, against which every comparison and
        # ``timestamp()`` costs 0.5 us more (three per detection). An offset other than Z goes
        # to pydantic: ``fromisoformat`` accepts offset minutes of 60 and more.
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:  # a date that does not exist: pydantic's parse reports it
            moment = None
    if moment is None:
        moment = parse(value)
    # Year-1 times would also overflow the UTC conversion of the CoT times.
    if moment < EARLIEST_TIMESTAMP:
        raise invalid("timestamp_past", "is before 1970-01-01T00:00:00Z")
    now = context_value(info, "now") or datetime.now(UTC)
    if moment > now + MAX_FUTURE_SKEW:
        raise invalid(
            "timestamp_future",
            "is more than {hours} h in the future",
            hours=round(MAX_FUTURE_SKEW.total_seconds() / 3600),
        )
    return moment


Timestamp = Annotated[AwareDatetime, WrapValidator(capture_time)]


def not_blank(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise invalid("blank", "must not be blank")
    return stripped


def context_value(info: ValidationInfo, key: str) -> Any:
    """A validation context entry (``max_image_bytes``, ``now``), None when absent."""
    return info.context.get(key) if isinstance(info.context, dict) else None
