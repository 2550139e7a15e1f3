"""The first point along a ray where it meets the terrain of a ``HeightMosaic`` (a ray march).

f(t) = geodetic height of C + t d  -  terrain height under it; the hit is the smallest t > 0 with
f(t) = 0, so a ridge between the camera and a valley hides the valley. Every sample is exact: the
ray point's geodetic coordinates come from the closed-form ECEF -> geodetic conversion (curvature
included), the terrain height from the bilinear surface of the DEM posts.

The march walks the ray's ground track through the DEM grid:
- over a block of 16 x 16 cells whose highest post is below the ray, it jumps to where the track
  leaves the block (the ray's height is convex in t, so it cannot dip below its tangent);
- elsewhere it steps cell boundary to cell boundary. Along one cell the bilinear surface is a
  quadratic in t (the track is straight there to well under a millimetre), so a sign change at the
  ends, or a quadratic through the ends and the middle that dips below zero, finds every crossing,
  including a ray that clips the corner of a cell and comes out again;
- a bracket [above, below] is then refined (Illinois regula falsi on the exact f) until it is
  narrower than ``RANGE_TOLERANCE_M``: the hit is within a millimetre along the ray.

Where the track meets ground with no data (outside every raster, or a nodata post) before any hit,
the march stops and says so (``TerrainMiss``): the caller falls back to the flat ground and reports
it, because the first hit cannot be known over unknown ground.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from detection_api.geo.ellipsoid import (
    Vec3,
    ecef_to_geodetic,
    meridian_radius_m,
    prime_vertical_radius_m,
)
from detection_api.geo.heightgrid import BLOCK_POSTS, HeightMosaic
from detection_api.geo.types import GeolocationError, NoGroundIntersection

RANGE_TOLERANCE_M = 1e-3
_PAST_BOUNDARY_POSTS = 1e-6  # land this far inside the next cell so it is the one looked up
_MAX_SAMPLES = 200_000
_DEG = 180.0 / math.pi
_RATES_VALID_M = 500.0  # the track's direction turns ~0.005 deg per km: refresh it this often


class TerrainCrossing(NamedTuple):
    range_m: float  # along the unit ray from the camera
    point_ecef: Vec3
    lat_rad: float
    lon_rad: float
    height_m: float  # terrain height HAE at the hit (= the ray's height to a millimetre)
    dh_dlat_per_deg: float  # terrain gradient there, metres per degree
    dh_dlon_per_deg: float
    tile: str  # the raster the hit lies on
    post_spacing_deg: tuple[float, float]  # (lat, lon) post spacing of that raster


class TerrainMiss(NamedTuple):
    reason: str  # "outside_dem" or "dem_nodata"
    range_m: float  # where the ray met ground without data


class _Sample(NamedTuple):
    t: float
    f: float  # ray height minus terrain height; NaN: no data there
    lat_deg: float
    lon_deg: float
    height_m: float  # the ray's geodetic height
    lat_rad: float
    lon_rad: float


def first_terrain_crossing(
    camera_ecef: Vec3, unit_ray_ecef: Vec3, dem: HeightMosaic, max_range_m: float
) -> TerrainCrossing | TerrainMiss:
    """March the unit ray from the camera until it meets the terrain (see the module docstring).

    Raises GeolocationError: CAMERA_BELOW_GROUND when the camera is at or under the terrain,
    BEYOND_MAX_RANGE / ABOVE_HORIZON when no terrain is met within ``max_range_m``.
    """
    march = _March(camera_ecef, unit_ray_ecef, dem)
    current = march.sample(0.0)
    if math.isnan(current.f):
        return march.miss(current)
    if current.f <= 0.0:
        raise GeolocationError(
            NoGroundIntersection.CAMERA_BELOW_GROUND,
            f"the camera is {-current.f:.2f} m below the terrain of the DEM",
        )
    fine_step_m = 0.5 * min(e.post_spacing_m() for e in dem.extents)
    for _ in range(_MAX_SAMPLES):
        if current.t > max_range_m:
            break
        step, check_inside = march.next_step(current, fine_step_m)
        # a ray (nearly) straight down never leaves its cell: its step ends past the range limit
        step = min(step, max_range_m + fine_step_m - current.t)
        following = march.sample(current.t + step)
        if math.isnan(following.f):
            return march.miss(following)
        if following.f <= 0.0:
            return march.refine(current, following)
        if check_inside:
            dip = march.dip_inside(current, following)
            if dip is not None:
                return march.refine(current, dip)
        current = following
    if current.t <= max_range_m:  # pragma: no cover - only a degenerate DEM gets here
        raise ArithmeticError("terrain march did not finish")
    climbing = march.height_rate(current) >= 0.0
    raise GeolocationError(
        NoGroundIntersection.ABOVE_HORIZON if climbing else NoGroundIntersection.BEYOND_MAX_RANGE,
        f"the ray meets no terrain within the {max_range_m:.0f} m limit",
    )


class _March:
    def __init__(self, camera_ecef: Vec3, unit_ray_ecef: Vec3, dem: HeightMosaic) -> None:
        self.origin = camera_ecef
        self.ray = unit_ray_ecef
        self.dem = dem
        self._rates_at = -math.inf
        self._rates = (0.0, 0.0, 0.0)

    def sample(self, t: float) -> _Sample:
        x0, y0, z0 = self.origin
        dx, dy, dz = self.ray
        lat, lon, h = ecef_to_geodetic(x0 + t * dx, y0 + t * dy, z0 + t * dz)
        lat_deg, lon_deg = lat * _DEG, lon * _DEG
        found = self.dem.grid_at(lat_deg, lon_deg)
        if found is None:
            terrain = self.dem.height(lat_deg, lon_deg)[0]  # a seam, or no data
        else:
            terrain = found[0].bilinear(found[1], found[2])[0]
        return _Sample(t, h - terrain, lat_deg, lon_deg, h, lat, lon)

    def miss(self, sample: _Sample) -> TerrainMiss:
        covered = self.dem.grid_at(sample.lat_deg, sample.lon_deg) is not None
        return TerrainMiss("dem_nodata" if covered else "outside_dem", sample.t)

    def height_rate(self, s: _Sample) -> float:
        """d (geodetic height) / dt: the local up . ray."""
        cos_lat = math.cos(s.lat_rad)
        dx, dy, dz = self.ray
        return (
            cos_lat * math.cos(s.lon_rad) * dx
            + cos_lat * math.sin(s.lon_rad) * dy
            + math.sin(s.lat_rad) * dz
        )

    def next_step(self, s: _Sample, fine_step_m: float) -> tuple[float, bool]:
        """How far to go from ``s``, and whether the step crosses a cell that needs a dip check."""
        found = self.dem.grid_at(s.lat_deg, s.lon_deg)
        if found is None:  # a seam between tiles: small fixed steps
            return fine_step_m, True
        grid, row, col = found
        ext = grid.extent
        lat_rate, lon_rate, up = self._track_rates(s)
        row_rate = -lat_rate / ext.dlat_deg
        col_rate = lon_rate / ext.dlon_deg
        i = min(int(row), grid.rows - 2)
        j = min(int(col), grid.cols - 2)
        block_max = grid.block_max[i // BLOCK_POSTS][j // BLOCK_POSTS]
        if s.height_m > block_max:
            to_exit = _to_boundary(row, col, row_rate, col_rate, BLOCK_POSTS)
            if up >= 0.0 or (s.height_m - block_max) / -up >= to_exit:
                return to_exit, False  # the ray stays above the whole block
        return _to_boundary(row, col, row_rate, col_rate, 1), True

    def _track_rates(self, s: _Sample) -> tuple[float, float, float]:
        """(d lat / dt, d lon / dt in degrees per metre, d height / dt) near ``s``."""
        if abs(s.t - self._rates_at) <= _RATES_VALID_M:
            return self._rates
        sin_lat, cos_lat = math.sin(s.lat_rad), math.cos(s.lat_rad)
        sin_lon, cos_lon = math.sin(s.lon_rad), math.cos(s.lon_rad)
        dx, dy, dz = self.ray
        east = -sin_lon * dx + cos_lon * dy
        north = -sin_lat * cos_lon * dx - sin_lat * sin_lon * dy + cos_lat * dz
        up = cos_lat * cos_lon * dx + cos_lat * sin_lon * dy + sin_lat * dz
        lat_rate = north / (meridian_radius_m(s.lat_rad) + s.height_m) * _DEG
        lon_rate = (
            east / ((prime_vertical_radius_m(s.lat_rad) + s.height_m) * max(cos_lat, 1e-12)) * _DEG
        )
        self._rates_at, self._rates = s.t, (lat_rate, lon_rate, up)
        return self._rates

    def dip_inside(self, a: _Sample, b: _Sample) -> _Sample | None:
        """A point between two samples above the terrain where the ray is below it, if any."""
        middle = self.sample(0.5 * (a.t + b.t))
        if math.isnan(middle.f) or middle.f <= 0.0:
            return middle  # NaN: refine() reports the miss
        # f is quadratic along one cell: its minimum from the three samples
        curvature = a.f - 2.0 * middle.f + b.f
        if curvature <= 0.0:
            return None
        offset = 0.25 * (a.f - b.f) / curvature  # vertex, in units of (b.t - a.t)
        if not -0.5 < offset < 0.5:
            return None
        if middle.f - 0.25 * (a.f - b.f) * offset > 0.0:
            return None
        vertex = self.sample(0.5 * (a.t + b.t) + offset * (b.t - a.t))
        return vertex if math.isnan(vertex.f) or vertex.f <= 0.0 else None

    def refine(self, above: _Sample, below: _Sample) -> TerrainCrossing | TerrainMiss:
        """Illinois regula falsi on [above, below] to RANGE_TOLERANCE_M."""
        if math.isnan(below.f):
            return self.miss(below)
        a, b = above, below
        side = 0
        fa, fb = a.f, b.f
        best = b
        while b.t - a.t > RANGE_TOLERANCE_M:
            t = (a.t * fb - b.t * fa) / (fb - fa)
            if not a.t < t < b.t:
                t = 0.5 * (a.t + b.t)
            s = self.sample(t)
            if math.isnan(s.f):
                return self.miss(s)
            if s.f > 0.0:
                a, fa = s, s.f
                if side == 1:
                    fb *= 0.5
                side = 1
            else:
                b, fb = s, s.f
                best = s
                if side == -1:
                    fa *= 0.5
                side = -1
            if abs(s.f) < 1e-5:  # 0.01 mm vertical: millimetres along any ray
                best = s
                break
        terrain, d_lat, d_lon, tile = self.dem.height(best.lat_deg, best.lon_deg)
        x0, y0, z0 = self.origin
        dx, dy, dz = self.ray
        point = (x0 + best.t * dx, y0 + best.t * dy, z0 + best.t * dz)
        return TerrainCrossing(
            best.t,
            point,
            best.lat_rad,
            best.lon_rad,
            terrain,
            d_lat,
            d_lon,
            tile,
            self.dem.post_spacing_deg(best.lat_deg, best.lon_deg),
        )


def _to_boundary(row: float, col: float, row_rate: float, col_rate: float, posts: int) -> float:
    """Distance along the ray to the next multiple of ``posts`` in row or column, a hair past."""
    best = math.inf
    for position, rate in ((row, row_rate), (col, col_rate)):
        if rate > 0.0:
            target = (math.floor(position / posts) + 1) * posts
        elif rate < 0.0:
            target = (math.ceil(position / posts) - 1) * posts
        else:
            continue
        best = min(best, (target - position) / rate)
    fastest = max(abs(row_rate), abs(col_rate))
    return best + _PAST_BOUNDARY_POSTS / fastest if fastest > 0.0 else math.inf
