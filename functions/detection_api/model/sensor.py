"""``sensor_metadata``: the camera's pose, intrinsics and optional 1-sigma input errors."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

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
    invalid,
    outside_image,
)

# the image dimension each principal-point coordinate must stay within
_IMAGE_SIZE_FIELD = {"principal_x": "image_width", "principal_y": "image_height"}


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
            raise invalid(
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
            raise invalid(
                "focal_length_required",
                "focal_length (pixels) is required, or focal_length_mm with sensor_width_mm",
            )
        if width is None:
            return None  # image_width itself failed; that error is reported already
        focal_px = mm / sensor_mm * width
        if not (math.isfinite(focal_px) and MIN_FOCAL_LENGTH_PX <= focal_px <= MAX_FOCAL_LENGTH_PX):
            raise invalid(
                "focal_length_range",
                "focal_length_mm / sensor_width_mm * image_width is out of range",
            )
        return focal_px

    @field_validator("principal_x", "principal_y")
    @classmethod
    def _principal_point_inside(cls, value: float | None, info: ValidationInfo) -> float | None:
        field = info.field_name or ""
        bound = info.data.get(_IMAGE_SIZE_FIELD[field])
        if value is not None and bound is not None and value > bound:
            raise outside_image(field, bound)
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
