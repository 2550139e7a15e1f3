"""``python -m bench.terrain_table``: the README's flat-ground vs DEM table (issue 11).

A camera 300 m above the ground under it looks along the optical axis at a planar slope (5, 15
and 30 degrees, rising ahead of the camera or falling away) at pitches -20 to -60 degrees. For
each case: how far the flat-ground answer (the ground plane at the height under the camera, what
v1 does) lands from the true hit, the ce90 it claims, how far the DEM answer lands (a 1" DEM of the
same slope), and the ce90 it claims with the default input sigmas and DEM_SIGMA_M = 5 m.
"""

from __future__ import annotations

import math

import numpy as np
import pymap3d

from detection_api.geo.ellipsoid import meridian_radius_m
from detection_api.geo.heightgrid import GridExtent, HeightGrid, HeightMosaic
from detection_api.geo.locate import DEFAULT_SIGMAS, locate
from detection_api.geo.terrain import TerrainMiss
from detection_api.geo.terrain_locate import locate_on_terrain
from detection_api.geo.types import CameraPose, Geolocation, GeolocationError, Intrinsics

LAT0, LON0 = 46.0, 8.0
SPACING = 1.0 / 3600.0
HALF = 1200  # posts each side: ~37 km north-south
CAMERA = Intrinsics(focal_px=1400.0, width_px=1920.0, height_px=1080.0, cx_px=960.0, cy_px=540.0)
HEIGHT_M = 300.0
SLOPES = (5.0, 15.0, 30.0)
PITCHES = (-20.0, -30.0, -45.0, -60.0)
M_PER_DEG_N = meridian_radius_m(math.radians(LAT0)) * math.pi / 180.0


def slope_dem(slope_deg: float) -> HeightMosaic:
    """A plane rising northwards at ``slope_deg`` through 1000 m at the camera."""
    rows = cols = 2 * HALF + 1
    extent = GridExtent(
        "slope", LAT0 + HALF * SPACING, LON0 - HALF * SPACING, SPACING, SPACING, rows, cols
    )
    lats = extent.lat0_deg - np.arange(rows) * SPACING
    heights = 1000.0 + math.tan(math.radians(slope_deg)) * M_PER_DEG_N * (lats - LAT0)
    grid = HeightGrid(extent, np.repeat(heights[:, None], cols, axis=1))
    return HeightMosaic([extent], lambda _extent: grid)


def true_range(slope_deg: float, pitch_deg: float, heading_deg: float) -> float:
    """The exact hit on the slope, independently: pymap3d geodetics and bisection."""
    rise = math.tan(math.radians(slope_deg)) * M_PER_DEG_N
    h, p = math.radians(heading_deg), math.radians(pitch_deg)
    east, north, up = math.sin(h) * math.cos(p), math.cos(h) * math.cos(p), math.sin(p)

    def gap(t: float) -> float:
        lat, _, alt = pymap3d.enu2geodetic(t * east, t * north, t * up, LAT0, LON0, 1300.0)
        return alt - (1000.0 + rise * (lat - LAT0))

    low, high = 0.0, 1.0
    while gap(high) > 0.0:
        low, high = high, 2.0 * high
    for _ in range(80):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if gap(middle) > 0.0 else (low, middle)
    return high


def row(slope_deg: float, pitch_deg: float, heading_deg: float) -> str:
    dem = slope_dem(slope_deg)
    pose = CameraPose(LAT0, LON0, HEIGHT_M, 1000.0, heading_deg, pitch_deg, 0.0)
    flat = locate(pose, CAMERA, 960.0, 540.0, DEFAULT_SIGMAS)
    direction = "rising ahead" if heading_deg == 0.0 else "falling away"
    try:
        on_dem = locate_on_terrain(
            pose,
            CAMERA,
            960.0,
            540.0,
            DEFAULT_SIGMAS,
            dem=dem,
            camera_hae_m=1300.0,
            dem_sigma_m=5.0,
        )
    except GeolocationError as exc:
        no_hit = f"no hit within 20 km ({exc.reason.value})"
        return f"| {slope_deg:.0f}° {direction} | {pitch_deg:.0f}° | {no_hit} | | | |"
    assert isinstance(on_dem, Geolocation) and not isinstance(on_dem, TerrainMiss)
    truth = true_range(slope_deg, pitch_deg, heading_deg)
    horizontal = math.cos(math.radians(pitch_deg))
    # both answers lie along the same azimuth: compare distances along it (metres, horizontal)
    flat_error = abs(flat.slant_range_m - truth) * horizontal
    dem_error = abs(on_dem.slant_range_m - truth) * horizontal
    return (
        f"| {slope_deg:.0f}° {direction} | {pitch_deg:.0f}° | {flat_error:.1f} | {flat.ce90_m:.1f} "
        f"| {dem_error:.3f} | {on_dem.ce90_m:.1f} |"
    )


def main() -> None:
    print("| terrain | pitch | flat-ground error, m | flat ce90, m | DEM error, m | DEM ce90, m |")
    print("|---|---|---|---|---|---|")
    for heading in (0.0, 180.0):
        for slope in SLOPES:
            for pitch in PITCHES:
                print(row(slope, pitch, heading))


if __name__ == "__main__":
    main()
