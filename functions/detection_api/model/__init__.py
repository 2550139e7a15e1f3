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
HTTP layer can report them as they are. Cross-field rules (pixel or bbox, both inside the image,
the camera's height, the focal length, the principal point) are checked by one validator per model
once that model's fields are valid, and report each error at the path of the field it is about;
so a payload with field errors gets those first, and its cross-field errors after they are fixed.

Validation context keys (``Detection.model_validate(data, context={...})``): ``max_image_bytes``
(int) and ``now`` (aware datetime, for the future-timestamp bound; default the system clock).
"""

from detection_api.model.detection import (
    Detection,
    GeometryInputs,
    detection_json_schema,
    parse_detection,
)
from detection_api.model.fields import (
    DEFAULT_MAX_IMAGE_BYTES,
    DETECTION_SCHEMA_ID,
    MAX_CLASS_LENGTH,
    MAX_FOCAL_LENGTH_PX,
    MAX_FUTURE_SKEW,
    MAX_ID_LENGTH,
    MAX_IMAGE_SIDE_PX,
    MAX_TEXT_LENGTH,
    MIN_CAMERA_ALTITUDE_M,
    MIN_CAMERA_HEIGHT_M,
    MIN_FOCAL_LENGTH_PX,
)
from detection_api.model.sensor import SensorMetadata

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DETECTION_SCHEMA_ID",
    "MAX_CLASS_LENGTH",
    "MAX_FOCAL_LENGTH_PX",
    "MAX_FUTURE_SKEW",
    "MAX_ID_LENGTH",
    "MAX_IMAGE_SIDE_PX",
    "MAX_TEXT_LENGTH",
    "MIN_CAMERA_ALTITUDE_M",
    "MIN_CAMERA_HEIGHT_M",
    "MIN_FOCAL_LENGTH_PX",
    "Detection",
    "GeometryInputs",
    "SensorMetadata",
    "detection_json_schema",
    "parse_detection",
]
