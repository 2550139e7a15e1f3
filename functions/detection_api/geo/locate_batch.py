"""locate() for many detections at once: the same geometry over numpy arrays (issue 12).

``locate_many`` gives, element for element, what ``geo.locate.locate`` gives for each detection:
the same ray (geo/camera.py), the same ellipsoid crossing with the same Newton/bisection steps and
stopping rule (geo/intersect.py), the same Jacobian and ce90 (geo/uncertainty.py) and the same
Vincenty distance, so results agree to round-off (1e-9 degree, 1e-6 metre;
tests/test_geo_locate_batch.py). Any element the vectorised path does not settle on its own
(invalid input, a ray that misses the ground or reaches it beyond range, a crossing that needs
more than a few steps, an overflowing covariance, a Vincenty line that does not converge) is
handed to the scalar ``locate``, which gives its answer or raises its error: every detection gets
exactly the scalar outcome, and the scalar code stays the single definition of the edge cases.

numpy's fixed cost per operation (~1 us) is paid once per batch: cheaper than the scalar path
from about 20 detections on (``core.BATCH_MIN``; bench/core.py measures both paths).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detection_api.geo.camera import CameraAxes, axes_from_trig, ray_enu, ray_partials_enu
from detection_api.geo.ellipsoid_arrays import (
    Floats,
    geodesic_distance_m,
    geodetic_to_ecef,
    meridian_radius_m,
    normalize_longitude_deg,
    prime_vertical_radius_m,
)
from detection_api.geo.intersect_arrays import first_ground_crossings
from detection_api.geo.locate import (
    MAX_AXIS_OFFSET,
    MAX_CAMERA_HEIGHT_M,
    MAX_GROUND_HAE_M,
    MAX_SIGMAS,
    MIN_FOCAL_PX,
    locate,
)
from detection_api.geo.types import (
    CameraPose,
    ConfidenceFlag,
    Geolocation,
    GeolocationError,
    InputSigmas,
    Intrinsics,
    intrinsics_values,
    pose_values,
    sigma_values,
)
from detection_api.geo.uncertainty import (
    CE90_PER_SIGMA_CIRCULAR,
    LE90_PER_SIGMA,
    ce90_per_major_sigma_table,
    covariance_en,
    hit_en_jacobian,
    lagrange4,
)

_STEPS_PER_UNIT, _CE90_TABLE = ce90_per_major_sigma_table()
_TABLE = np.array(_CE90_TABLE)
_FLAGS = (ConfidenceFlag.GREEN, ConfidenceFlag.YELLOW, ConfidenceFlag.RED)

LocateInput = tuple[CameraPose, Intrinsics, float, float, InputSigmas]
# One detection's geometry as plain floats, in ROW_FIELDS order: what the batch path reads.
GeometryRow = tuple[float, ...]
ROW_FIELDS: tuple[str, ...] = (
    "lat_deg",
    "lon_deg",
    "height_above_ground_m",
    "ground_hae_m",
    "heading_deg",
    "pitch_deg",
    "roll_deg",
    "focal_px",
    "width_px",
    "height_px",
    "cx_px",
    "cy_px",
    "pixel_x",
    "pixel_y",
    "position_sigma_m",
    "altitude_sigma_m",
    "heading_sigma_deg",
    "pitch_sigma_deg",
    "roll_sigma_deg",
    "pixel_sigma",
)
_GEOMETRY = [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13]  # the values locate() requires finite


def row_of(item: LocateInput) -> GeometryRow:
    pose, camera, pixel_x, pixel_y, sigmas = item
    return (*pose_values(pose), *intrinsics_values(camera), pixel_x, pixel_y, *sigma_values(sigmas))


def item_of(row: GeometryRow) -> LocateInput:
    return (
        CameraPose(*row[:7]),
        Intrinsics(*row[7:12]),
        row[12],
        row[13],
        InputSigmas(*row[14:20]),
    )


def locate_many(
    inputs: Sequence[LocateInput],
    *,
    max_range_m: float = 20_000.0,
    green_max_m: float = 30.0,
    yellow_max_m: float = 100.0,
) -> list[Geolocation | GeolocationError]:
    """``locate(*item, ...)`` for every item: its Geolocation, or the GeolocationError it raises.

    Other errors of the scalar ``locate`` (ValueError for invalid numbers) propagate as they do
    there.
    """
    return locate_rows(
        [row_of(item) for item in inputs],
        max_range_m=max_range_m,
        green_max_m=green_max_m,
        yellow_max_m=yellow_max_m,
    )


def locate_rows(
    rows: Sequence[GeometryRow],
    *,
    max_range_m: float = 20_000.0,
    green_max_m: float = 30.0,
    yellow_max_m: float = 100.0,
) -> list[Geolocation | GeolocationError]:
    """``locate_many`` for geometry given as rows (``ROW_FIELDS``), which skips building the
    value objects of every detection that the vectorised path settles."""
    limits = {"max_range_m": max_range_m, "green_max_m": green_max_m, "yellow_max_m": yellow_max_m}
    results: list[Geolocation | GeolocationError | None] = list(
        locate_vectorised(
            rows, max_range_m=max_range_m, green_max_m=green_max_m, yellow_max_m=yellow_max_m
        )
    )
    for i, result in enumerate(results):
        if result is None:  # not settled by the vectorised path: the scalar one decides
            try:
                results[i] = locate(*item_of(rows[i]), **limits)
            except GeolocationError as exc:
                results[i] = exc
    return results  # type: ignore[return-value] # every None was replaced above


def locate_vectorised(
    rows: Sequence[GeometryRow],
    *,
    max_range_m: float = 20_000.0,
    green_max_m: float = 30.0,
    yellow_max_m: float = 100.0,
) -> list[Geolocation | None]:
    """The Geolocation of every item the vectorised path settles, None for the others (which
    the scalar ``locate`` must decide: an error, or a crossing that needs its slower steps)."""
    results: list[Geolocation | None] = [None] * len(rows)
    if not rows or not max_range_m > 0.0:
        return results
    cols = np.array(rows, dtype=np.float64).T
    lat_deg, lon_deg, above_ground, ground, heading, pitch, roll, focal = cols[:8]
    cx, cy, px, py = cols[10:14]
    sigma_cols = cols[14:]
    max_sigmas = np.array(sigma_values(MAX_SIGMAS))[:, None]
    with np.errstate(all="ignore"):
        # -- the scalar checks; whatever fails one goes to the scalar path for its error
        ok = np.isfinite(cols[_GEOMETRY]).all(axis=0)
        ok &= (np.abs(lat_deg) <= 90.0) & (np.abs(ground) <= MAX_GROUND_HAE_M)
        ok &= (above_ground > 0.0) & (above_ground <= MAX_CAMERA_HEIGHT_M)
        ok &= focal >= MIN_FOCAL_PX
        ok &= ((sigma_cols >= 0.0) & (sigma_cols <= max_sigmas)).all(axis=0)
        # -- the ray in the camera's ENU (geo/camera.py)
        lat, lon = np.radians(lat_deg), np.radians(lon_deg)
        sin_lat, cos_lat, sin_lon, cos_lon = np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon)
        camera_height = ground + above_ground
        h, p, r = np.radians(heading), np.radians(pitch), np.radians(roll)
        sh, ch, sp, cp, sr, cr = np.sin(h), np.cos(h), np.sin(p), np.cos(p), np.sin(r), np.cos(r)
        axes = CameraAxes(*axes_from_trig((sh, ch), (sp, cp), (sr, cr)), sh, ch, sp, cp, sr, cr)
        a, b = (px - cx) / focal, (py - cy) / focal
        ok &= np.maximum(np.abs(a), np.abs(b)) <= MAX_AXIS_OFFSET
        ray = ray_enu(axes, a, b)
        ok &= ray[2] < 0.0
        ray_length = np.sqrt(ray[0] * ray[0] + ray[1] * ray[1] + ray[2] * ray[2])
        e, n, u = (ray[0] / ray_length, ray[1] / ray_length, ray[2] / ray_length)
        # camera ENU frame (geo/ellipsoid.enu_frame) and the unit ray in ECEF
        cam_east = (-sin_lon, cos_lon, 0.0)
        cam_north = (-sin_lat * cos_lon, -sin_lat * sin_lon, cos_lat)
        cam_up = (cos_lat * cos_lon, cos_lat * sin_lon, sin_lat)
        dx = e * cam_east[0] + n * cam_north[0] + u * cam_up[0]
        dy = e * cam_east[1] + n * cam_north[1] + u * cam_up[1]
        dz = n * cam_north[2] + u * cam_up[2]
        x0, y0, z0 = geodetic_to_ecef(sin_lat, cos_lat, sin_lon, cos_lon, camera_height)

        range_m, hit, settled = first_ground_crossings(
            (x0, y0, z0), (dx, dy, dz), ground, ok.copy()
        )
        ok &= settled
        ok &= range_m <= max_range_m
        if not ok.any():
            return results

        # -- the Jacobian of the hit's East/North (geo/uncertainty.hit_en_jacobian)
        sin_hit_lat, cos_hit_lat = np.sin(hit.lat_rad), np.cos(hit.lat_rad)
        sin_hit_lon, cos_hit_lon = np.sin(hit.lon_rad), np.cos(hit.lon_rad)
        hit_axes_ecef = (
            (-sin_hit_lon, cos_hit_lon, 0.0),
            (-sin_hit_lat * cos_hit_lon, -sin_hit_lat * sin_hit_lon, cos_hit_lat),
            (cos_hit_lat * cos_hit_lon, cos_hit_lat * sin_hit_lon, sin_hit_lat),
        )
        hit_east, hit_north, hit_up = (
            tuple(
                frame[0] * axis[0] + frame[1] * axis[1] + frame[2] * axis[2]
                for frame in (cam_east, cam_north, cam_up)
            )
            for axis in hit_axes_ecef
        )
        jacobian = hit_en_jacobian(
            ray,
            ray_partials_enu(axes, a, b, focal),
            range_m / ray_length,
            tan_camera_lat=np.tan(lat),
            prime_vertical_plus_height_m=prime_vertical_radius_m(sin_lat) + camera_height,
            meridian_plus_height_m=meridian_radius_m(sin_lat) + camera_height,
            hit_frame_in_camera_enu=(hit_east, hit_north, hit_up),
        )
        sigmas = (sigma_cols[0], sigma_cols[0], *sigma_cols[1:], sigma_cols[5])
        var_e, cov_en, var_n = covariance_en(jacobian, sigmas)
        ok &= np.isfinite(var_e) & np.isfinite(cov_en) & np.isfinite(var_n)

        # -- ce90 (geo/uncertainty.ce90_m), le90, flag
        mean = 0.5 * (var_e + var_n)
        spread = np.hypot(0.5 * (var_e - var_n), cov_en)
        sigma_major = np.sqrt(np.maximum(mean + spread, 0.0))
        sigma_minor = np.sqrt(np.maximum(mean - spread, 0.0))
        ce90 = np.where(
            sigma_major <= 0.0, 0.0, sigma_major * _ce90_per_major_sigma(sigma_minor / sigma_major)
        )
        le90 = LE90_PER_SIGMA * sigma_cols[1]
        flag_index = np.where(ce90 <= green_max_m, 0, np.where(ce90 <= yellow_max_m, 1, 2))
        # (elements already handed to the scalar path become coincident points: no iterations)
        ground_distance, converged = geodesic_distance_m(
            *(np.where(ok, angle, 0.0) for angle in (lat, lon, hit.lat_rad, hit.lon_rad))
        )
        ok &= converged
        hit_lon_deg = normalize_longitude_deg(np.degrees(hit.lon_rad))

    rows = zip(
        np.flatnonzero(ok).tolist(),
        np.degrees(hit.lat_rad)[ok].tolist(),
        hit_lon_deg[ok].tolist(),
        ground[ok].tolist(),
        range_m[ok].tolist(),
        ground_distance[ok].tolist(),
        ce90[ok].tolist(),
        le90[ok].tolist(),
        var_e[ok].tolist(),
        cov_en[ok].tolist(),
        var_n[ok].tolist(),
        flag_index[ok].tolist(),
        strict=True,
    )
    for i, lat_out, lon_out, hae, slant, distance, c90, l90, ve, cen, vn, flag in rows:
        # In field order, positionally: a named tuple called with keywords gets them as a dict
        # (type calls do), twice the instructions of the whole construction.
        results[i] = Geolocation(
            lat_out,  # lat_deg
            lon_out,  # lon_deg
            hae,  # hae_m
            slant,  # slant_range_m
            distance,  # ground_distance_m
            c90,  # ce90_m
            l90,  # le90_m
            c90 / CE90_PER_SIGMA_CIRCULAR,  # ce_m
            l90 / LE90_PER_SIGMA,  # le_m
            (ve, cen, vn),  # covariance_en_m2
            _FLAGS[flag],  # flag
        )
    return results


def _ce90_per_major_sigma(ratio: Floats) -> Floats:
    """uncertainty._ce90_per_major_sigma over an array (4-point Lagrange on the same table)."""
    x = np.nan_to_num(ratio) * _STEPS_PER_UNIT
    i = np.minimum(x.astype(np.int64), _STEPS_PER_UNIT - 1)
    t = x - i
    return lagrange4(t, _TABLE[np.abs(i - 1)], _TABLE[i], _TABLE[i + 1], _TABLE[i + 2])
