"""The first point along a ray where it meets the terrain of a ``HeightMosaic`` (a ray march).

f(t) = geodetic height of C + t d  -  terrain height under it; the hit is the smallest t > 0 with
f(t) = 0, so a ridge between the camera and a valley hides the valley. The ray point's geodetic
coordinates are quadratics in t fitted every 5 km to the closed-form ECEF -> geodetic conversion
(curvature included; the neglected cubic term is ~1e-5 m), the hit itself is converted exactly;
the terrain height is the bilinear surface of the DEM posts.

The march walks the ray's ground track through the DEM grid:
- over a block of 16 x 16 (else 4 x 4) cells whose highest post is below the ray, it jumps to
  where the track leaves the block or the ray comes down to that highest post, whichever is first
  (the ray's height is convex in t: never below its tangent);
- elsewhere it steps cell boundary to cell boundary. Along one cell the bilinear surface is a
  quadratic in t (the track is straight there to well under a millimetre), so a sign change at the
  ends, or a quadratic through the ends and the middle that dips below zero, finds every crossing,
  including a ray that clips the corner of a cell and comes out again;
- a bracket [above, below] is then refined (Illinois regula falsi on f) until it is narrower
  than ``RANGE_TOLERANCE_M`` or |f| < 0.01 mm: the hit is within a millimetre along the ray.

A crossing can only be missed where the ray dips under the surface and out again within the
3 cm (1e-3 post) by which a step lands past a cell or block boundary.

Where the track meets ground with no data (outside every raster, or a nodata post) before any hit,
the march stops and says so (``TerrainMiss``): the caller falls back to the flat ground and reports
it, because the first hit cannot be known over unknown ground.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from detection_api.geo.ellipsoid import (
    Vec3,
    ecef_to_geodetic,
)
from detection_api.geo.types import GeolocationError, NoGroundIntersection

if TYPE_CHECKING:
    from detection_api.geo.heightgrid import HeightGrid, HeightMosaic

RANGE_TOLERANCE_M = 1e-3
_PAST_BOUNDARY_POSTS = 1e-3  # land this far (3 cm on 1" posts) inside the next cell or block
_MAX_SAMPLES = 200_000
_DEG = 180.0 / math.pi
_SAGITTA_MARGIN_M = 1e-3
# The march takes the ray's geodetic coordinates from quadratics fitted to exact conversions
# every _PIECE_M (the cubic term is ~1e-5 m over 5 km); the hit itself is converted exactly.
_PIECE_M = 5_000.0


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
    cell: tuple[HeightGrid, float, float] | None  # the grid holding the point, its (row, col)


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
    fine_step_m = 0.5 * dem.min_post_spacing_m
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
        if check_inside and march.may_dip(current, following):
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
        self._pieces: dict[int, tuple[float, ...]] = {}

    def sample(self, t: float) -> _Sample:
        piece = int(t // _PIECE_M)
        c = self._pieces.get(piece)
        if c is None:
            c = self._fit(piece)
        u = t - piece * _PIECE_M
        lat_deg = c[0] + u * (c[1] + u * c[2])
        lon_deg = c[3] + u * (c[4] + u * c[5])
        h = c[6] + u * (c[7] + u * c[8])
        found = self.dem.grid_at(lat_deg, lon_deg)
        if found is None:
            terrain = self.dem.height(lat_deg, lon_deg)[0]  # a seam, or no data
        else:
            terrain = found[0].height(found[1], found[2])
        return _Sample(t, h - terrain, lat_deg, lon_deg, h, lat_deg / _DEG, lon_deg / _DEG, found)

    def _fit(self, piece: int) -> tuple[float, ...]:
        """Quadratics in u = t - piece start for (lat deg, lon deg, height) through exact points at
        the start, middle and end of the piece."""
        x0, y0, z0 = self.origin
        dx, dy, dz = self.ray
        points = []
        for k in (0.0, 0.5, 1.0):
            t = (piece + k) * _PIECE_M
            lat, lon, h = ecef_to_geodetic(x0 + t * dx, y0 + t * dy, z0 + t * dz)
            points.append((lat * _DEG, lon * _DEG, h))
        coefficients: list[float] = []
        for axis in range(3):
            p0, p1, p2 = (point[axis] for point in points)
            if axis == 1:  # keep longitude continuous across the antimeridian
                p1 += 360.0 * round((p0 - p1) / 360.0)
                p2 += 360.0 * round((p0 - p2) / 360.0)
            coefficients += [
                p0,
                (4.0 * p1 - 3.0 * p0 - p2) / _PIECE_M,
                2.0 * (p0 - 2.0 * p1 + p2) / (_PIECE_M * _PIECE_M),
            ]
        fitted = tuple(coefficients)
        self._pieces[piece] = fitted
        return fitted

    def rates(self, t: float) -> tuple[float, float, float]:
        """(d lat / dt, d lon / dt in degrees per metre, d height / dt) at t."""
        piece = int(t // _PIECE_M)
        c = self._pieces.get(piece) or self._fit(piece)
        u2 = 2.0 * (t - piece * _PIECE_M)
        return c[1] + u2 * c[2], c[4] + u2 * c[5], c[7] + u2 * c[8]

    def miss(self, sample: _Sample) -> TerrainMiss:
        covered = self.dem.grid_at(sample.lat_deg, sample.lon_deg) is not None
        return TerrainMiss("dem_nodata" if covered else "outside_dem", sample.t)

    def height_rate(self, s: _Sample) -> float:
        return self.rates(s.t)[2]

    def next_step(self, s: _Sample, fine_step_m: float) -> tuple[float, bool]:
        """How far to go from ``s``, and whether the step crosses a cell that needs a dip check."""
        if s.cell is None:  # a seam between tiles: small fixed steps
            return fine_step_m, True
        grid, row, col = s.cell
        ext = grid.extent
        lat_rate, lon_rate, up = self.rates(s.t)
        row_rate = -lat_rate / ext.dlat_deg
        col_rate = lon_rate / ext.dlon_deg
        i = min(int(row), grid.rows - 2)
        j = min(int(col), grid.cols - 2)
        for posts, per_row, maxima in grid.block_levels:
            block_max = maxima[(i // posts) * per_row + j // posts]
            if s.height_m > block_max:
                # above every post of the block until it leaves it or comes down to their top
                step = _to_boundary(row, col, row_rate, col_rate, posts)
                if up < 0.0:
                    step = min(step, (s.height_m - block_max) / -up)
                if step >= fine_step_m:
                    return step, False
        return _to_boundary(row, col, row_rate, col_rate, 1), True

    def may_dip(self, a: _Sample, b: _Sample) -> bool:
        """False when the ray stays above every post of the cell between two samples.

        The ray's height is convex in t (it curves away from the Earth), so within a cell it is
        above the lower end's height less the sagitta, under a millimetre for any cell.
        """
        if a.cell is not None and b.cell is not None and a.cell[0] is b.cell[0]:
            grid = a.cell[0]
            cell_max = grid.cell_max(0.5 * (a.cell[1] + b.cell[1]), 0.5 * (a.cell[2] + b.cell[2]))
        else:
            found = self.dem.grid_at(0.5 * (a.lat_deg + b.lat_deg), 0.5 * (a.lon_deg + b.lon_deg))
            if found is None:
                return True
            cell_max = found[0].cell_max(found[1], found[2])
        return not min(a.height_m, b.height_m) - _SAGITTA_MARGIN_M > cell_max

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
        x0, y0, z0 = self.origin
        dx, dy, dz = self.ray
        point = (x0 + best.t * dx, y0 + best.t * dy, z0 + best.t * dz)
        lat, lon, _ = ecef_to_geodetic(*point)
        lat_deg, lon_deg = lat * _DEG, lon * _DEG
        terrain, d_lat, d_lon, tile = self.dem.height(lat_deg, lon_deg)
        return TerrainCrossing(
            best.t,
            point,
            lat,
            lon,
            terrain,
            d_lat,
            d_lon,
            tile,
            self.dem.post_spacing_deg(lat_deg, lon_deg),
        )


def _to_boundary(row: float, col: float, row_rate: float, col_rate: float, posts: int) -> float:
    """Distance along the ray to the next multiple of ``posts`` in row or column, a hair past."""
    best = math.inf
    fastest = 0.0
    if row_rate > 0.0:
        best = ((row // posts + 1.0) * posts - row) / row_rate
        fastest = row_rate
    elif row_rate < 0.0:
        best = ((-(-row // posts) - 1.0) * posts - row) / row_rate
        fastest = -row_rate
    if col_rate > 0.0:
        best = min(best, ((col // posts + 1.0) * posts - col) / col_rate)
        fastest = max(fastest, col_rate)
    elif col_rate < 0.0:
        best = min(best, ((-(-col // posts) - 1.0) * posts - col) / col_rate)
        fastest = max(fastest, -col_rate)
    return best + _PAST_BOUNDARY_POSTS / fastest if fastest > 0.0 else math.inf
