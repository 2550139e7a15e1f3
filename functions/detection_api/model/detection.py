"""The detection: what was seen, where in the image, the camera that saw it; parsing and schema."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from datetime import datetime
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from detection_api.geo.locate import DEFAULT_SIGMAS
from detection_api.geo.types import CameraPose, InputSigmas, Intrinsics
from detection_api.model.fields import (
    DATA_URL_PREFIX,
    DEFAULT_MAX_IMAGE_BYTES,
    DETECTION_SCHEMA_ID,
    MAX_CLASS_LENGTH,
    NO_CONTROL_CHARS,
    Finite,
    Identifier,
    Text,
    Timestamp,
    context_value,
    field_error,
    field_errors,
    invalid,
    not_blank,
    outside_image,
)
from detection_api.model.sensor import SensorMetadata


class GeometryInputs(NamedTuple):
    """Arguments of ``geo.locate.locate`` for one detection."""

    pose: CameraPose
    intrinsics: Intrinsics
    pixel_x: float
    pixel_y: float
    sigmas: InputSigmas


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
        Field(min_length=1, max_length=MAX_CLASS_LENGTH, pattern=NO_CONTROL_CHARS),
        AfterValidator(not_blank),
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
    sensor_metadata: SensorMetadata
    bbox: (
        Annotated[
            tuple[Finite, Finite, Finite, Finite],
            Field(description="[x_min, y_min, x_max, y_max], pixels"),
        ]
        | None
    ) = None
    pixel_x: Annotated[Finite, Field(ge=0.0)] | None = None
    pixel_y: Annotated[Finite, Field(ge=0.0)] | None = None

    @field_validator("image_sha256", mode="before")
    @classmethod
    def _digest_image(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid("image_type", "must be a base64 string")
        cap = context_value(info, "max_image_bytes")
        cap = DEFAULT_MAX_IMAGE_BYTES if cap is None else int(cap)
        text = DATA_URL_PREFIX.sub("", value, count=1)
        # Refuse before decoding: base64 carries 3 bytes per 4 characters.
        if len(text) > 4 * math.ceil(cap / 3) + 4:
            raise invalid("image_too_large", "image is larger than {cap} bytes", cap=cap)
        try:
            image = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("image_base64", "is not valid base64") from None
        if len(image) > cap:
            raise invalid("image_too_large", "image is larger than {cap} bytes", cap=cap)
        return hashlib.sha256(image).hexdigest()

    @model_validator(mode="after")
    def _image_points(self) -> Detection:
        # The cross-field rules of the bbox and the pixel, once every field is valid: one call
        # instead of three field validators (each cost a detection about 2.6 K instructions).
        # Values from the models' __dict__: a model's attribute lookup costs 60 ns, 3x a dict's.
        values = self.__dict__
        bbox, pixel_x, pixel_y = values["bbox"], values["pixel_x"], values["pixel_y"]
        meta = values["sensor_metadata"].__dict__
        width, height = meta["image_width"], meta["image_height"]
        errors: list[InitErrorDetails] = []
        if bbox is not None:
            x_min, y_min, x_max, y_max = bbox
            if not (x_min < x_max and y_min < y_max):
                message = "must be ordered [x_min, y_min, x_max, y_max] with min < max"
                errors.append(field_error(("bbox",), bbox, invalid("bbox_order", message)))
            elif x_min < 0 or y_min < 0 or x_max > width or y_max > height:
                error = invalid(
                    "outside_image",
                    "must lie inside the image (0..{width}, 0..{height})",
                    width=width,
                    height=height,
                )
                errors.append(field_error(("bbox",), bbox, error))
        _check_pixel(errors, "pixel_x", pixel_x, width, bbox)
        if (pixel_x is None) != (pixel_y is None):
            message = "pixel_x and pixel_y must be given together"
            errors.append(field_error(("pixel_y",), pixel_y, invalid("pixel_pair", message)))
        else:
            _check_pixel(errors, "pixel_y", pixel_y, height, bbox)
        if errors:
            raise field_errors("Detection", errors)
        return self

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

    def geometry_row(self, default_sigmas: InputSigmas = DEFAULT_SIGMAS) -> tuple[float, ...]:
        """``geometry_inputs`` as plain floats in ``geo.locate_batch.ROW_FIELDS`` order, for the
        batch path (no value objects per detection)."""
        pixel_x, pixel_y = self.pixel
        meta = self.sensor_metadata
        if meta.focal_length is None:  # only reachable on an unvalidated (model_construct) copy
            raise ValueError("sensor_metadata has no focal length")
        width, height = float(meta.image_width), float(meta.image_height)
        d = default_sigmas
        return (
            meta.location_lat,
            meta.location_lon,
            meta.location_elevation,
            meta.ground_elevation,
            meta.heading,
            meta.pitch,
            meta.roll,
            meta.focal_length,
            width,
            height,
            width / 2 if meta.principal_x is None else meta.principal_x,
            height / 2 if meta.principal_y is None else meta.principal_y,
            pixel_x,
            pixel_y,
            d.position_m if meta.position_sigma_m is None else meta.position_sigma_m,
            d.altitude_m if meta.altitude_sigma_m is None else meta.altitude_sigma_m,
            d.heading_deg if meta.heading_sigma_deg is None else meta.heading_sigma_deg,
            d.pitch_deg if meta.pitch_sigma_deg is None else meta.pitch_sigma_deg,
            d.roll_deg if meta.roll_sigma_deg is None else meta.roll_sigma_deg,
            d.pixel if meta.pixel_sigma is None else meta.pixel_sigma,
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
    # The model's validator itself: ``model_validate`` passes seven keyword arguments more, 1.4%
    # of a list's instructions (``python -m bench.instructions --list 100``)
    return Detection.__pydantic_validator__.validate_python(data, context=context)


def detection_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of the payload: the CloudEvent ``dataschema``."""
    schema = Detection.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": DETECTION_SCHEMA_ID,
        **schema,
    }


def _check_pixel(
    errors: list[InitErrorDetails],
    field: str,
    value: float | None,
    limit: int,
    bbox: tuple[float, float, float, float] | None,
) -> None:
    """One pixel coordinate's rules: required unless there is a bbox, inside the image."""
    if value is None:
        if bbox is None:
            message = "{field} is required unless bbox is given"
            errors.append(
                field_error((field,), None, invalid("pixel_required", message, field=field))
            )
    elif value > limit:
        errors.append(field_error((field,), value, outside_image(field, limit)))
