"""Synthetic DEM rasters written with rasterio, and an independent ray march to check hits against.

Surfaces are functions H(lat_deg, lon_deg) on numpy arrays. The reference march shares no code
with detection_api.geo: the ray comes from pymap3d (ENU -> ECEF), its points' heights from
pymap3d's ECEF -> geodetic, and the first crossing from dense sampling (0.5 m) then bisection.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pymap3d
import rasterio
from affine import Affine

Surface = Callable[[np.ndarray, np.ndarray], np.ndarray]
ARC_SECOND = 1.0 / 3600.0


def post_axes(
    north_deg: float, west_deg: float, rows: int, cols: int, spacing_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    return north_deg - np.arange(rows) * spacing_deg, west_deg + np.arange(cols) * spacing_deg


def write_dem(
    path: Path,
    surface: Surface,
    *,
    north_deg: float,
    west_deg: float,
    rows: int,
    cols: int,
    spacing_deg: float,
    nodata: float | None = None,
    holes: list[tuple[slice, slice]] | None = None,
    area_or_point: str = "Area",
) -> Path:
    """A one-band float32 GeoTIFF whose post (i, j) holds surface(north - i d, west + j d)."""
    lats, lons = post_axes(north_deg, west_deg, rows, cols, spacing_deg)
    heights = surface(lats[:, None], lons[None, :]).astype(np.float32)
    heights = np.broadcast_to(heights, (rows, cols)).copy()
    for rows_slice, cols_slice in holes or []:
        assert nodata is not None
        heights[rows_slice, cols_slice] = nodata
    # GDAL wants the outer corner of the first pixel: half a post north-west of the first post
    transform = Affine(
        spacing_deg, 0.0, west_deg - spacing_deg / 2, 0.0, -spacing_deg, north_deg + spacing_deg / 2
    )
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=rows,
        width=cols,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=transform,
        nodata=nodata,
    ) as ds:
        ds.update_tags(AREA_OR_POINT=area_or_point)
        ds.write(heights, 1)
    return path


def reference_hit(
    lat_deg: float,
    lon_deg: float,
    hae_m: float,
    heading_deg: float,
    pitch_deg: float,
    surface: Surface,
    max_range_m: float,
    step_m: float = 0.5,
) -> tuple[float, float, float, float]:
    """(range, lat, lon, height) of the first crossing of the optical axis with the surface."""
    h, p = math.radians(heading_deg), math.radians(pitch_deg)
    e, n, u = math.sin(h) * math.cos(p), math.cos(h) * math.cos(p), math.sin(p)
    x0, y0, z0 = pymap3d.geodetic2ecef(lat_deg, lon_deg, hae_m)
    x1, y1, z1 = pymap3d.enu2ecef(e, n, u, lat_deg, lon_deg, hae_m)
    d = np.array([x1 - x0, y1 - y0, z1 - z0])
    d /= np.linalg.norm(d)

    def gap(t: np.ndarray) -> np.ndarray:
        la, lo, alt = pymap3d.ecef2geodetic(x0 + t * d[0], y0 + t * d[1], z0 + t * d[2])
        return alt - surface(la, lo)

    t = np.arange(0.0, max_range_m + step_m, step_m)
    below = np.nonzero(gap(t) <= 0.0)[0]
    assert below.size, "the reference ray meets no surface"
    k = int(below[0])
    lo_t, hi_t = float(t[k - 1]), float(t[k])
    for _ in range(60):
        mid = 0.5 * (lo_t + hi_t)
        if gap(np.array([mid]))[0] > 0.0:
            lo_t = mid
        else:
            hi_t = mid
    la, lo, alt = pymap3d.ecef2geodetic(x0 + hi_t * d[0], y0 + hi_t * d[1], z0 + hi_t * d[2])
    return hi_t, float(la), float(lo), float(alt)
