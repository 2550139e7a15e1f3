"""``sensor_metadata``: the camera's pose, intrinsics and optional 1-sigma input errors."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from detection_api.geo.locate import DEFAULT_SIGMAS
from detection_api.geo.types import AltitudeReference, CameraPose, InputSigmas, Intrinsics
from detection_api.model.fields import (
    MAX_FOCAL_LENGTH_PX,
    MIN_CAMERA_ALTITUDE_M,
    MIN_CAMERA_HEIGHT_M,
    MIN_FOCAL_LENGTH_PX,
    Finite,
    ImageSide,
    Sigma,
    field_error,
    field_errors,
    invalid,
    outside_image,
)

_GROUND = AltitudeReference.GROUND


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
    ) = None
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

    @model_validator(mode="after")
    def _camera_focal_length_and_principal_point(self) -> SensorMetadata:
        # The cross-field rules, once every field is valid: one call instead of two to four field
        # validators (each cost a detection about 2.6 K instructions). The resolved focal length
        # is set on the frozen model as its validation's last step.
        values = self.__dict__  # (a model's attribute lookup costs 60 ns, 3x a dict's)
        errors: list[InitErrorDetails] = []
        elevation = values["location_elevation"]
        if elevation < MIN_CAMERA_HEIGHT_M and values["altitude_reference"] is _GROUND:
            error = invalid(
                "camera_height",
                "must be at least {minimum} m above the ground",
                minimum=MIN_CAMERA_HEIGHT_M,
            )
            errors.append(field_error(("location_elevation",), elevation, error))
        if values["focal_length"] is None:
            focal_px = self._focal_length_from_mm()
            if isinstance(focal_px, float):
                object.__setattr__(self, "focal_length", focal_px)
            else:
                errors.append(field_error(("focal_length",), None, focal_px))
        principal_x, principal_y = values["principal_x"], values["principal_y"]
        if principal_x is not None and principal_x > values["image_width"]:
            error = outside_image("principal_x", values["image_width"])
            errors.append(field_error(("principal_x",), principal_x, error))
        if principal_y is not None and principal_y > values["image_height"]:
            error = outside_image("principal_y", values["image_height"])
            errors.append(field_error(("principal_y",), principal_y, error))
        if errors:
            raise field_errors("SensorMetadata", errors)
        return self

    def _focal_length_from_mm(self) -> float | PydanticCustomError:
        mm, sensor_mm = self.focal_length_mm, self.sensor_width_mm
        if mm is None or sensor_mm is None:
            return invalid(
                "focal_length_required",
                "focal_length (pixels) is required, or focal_length_mm with sensor_width_mm",
            )
        focal_px = mm / sensor_mm * self.image_width
        if not (math.isfinite(focal_px) and MIN_FOCAL_LENGTH_PX <= focal_px <= MAX_FOCAL_LENGTH_PX):
            return invalid(
                "focal_length_range",
                "focal_length_mm / sensor_width_mm * image_width is out of range",
            )
        return focal_px

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
