"""Terrain heights on geographic grids: one raster (``HeightGrid``) and a mosaic of them.

Pure data and arithmetic (numpy, no file access): geo/dem.py reads rasters into these.

A grid holds posts: the height of post (row, col) belongs to the point

    lat = lat0_deg - row * dlat_deg,   lon = lon0_deg + col * dlon_deg

(north-up, rows going south). This is the pixel-centre convention of GDAL geotransforms, so
pixel-is-area and pixel-is-point rasters both land here correctly (GDAL already shifts a
pixel-is-point geotransform by half a pixel). Heights are metres above the WGS84 ellipsoid (the
reader converts geoid-referenced rasters); nodata is NaN.

Between posts the surface is bilinear in (row, col): exact for any surface linear in latitude and
longitude, continuous across cells, and with an analytic gradient. A point in the strip between two
tiles that do not share edge posts (a seam) takes its four posts from both tiles.

For the ray march each grid also keeps the maximum height per block of n x n cells for each n in
``BLOCK_LEVELS`` (coarse first; the posts on a block's far edges included, so every cell of the
block is under it); a block touching any nodata post has +inf, so nothing is ever skipped over
unknown ground.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

BLOCK_LEVELS = (16, 4)  # cells per block side: ~480 m and ~120 m on a 1" DEM
_POST_TOLERANCE = 1e-6  # fraction of a post spacing under which two posts are the same point


@dataclass(frozen=True, slots=True)
class GridExtent:
    """Where a grid's posts are, known from a raster's header without reading its heights."""

    name: str  # file name, reported as "the DEM used"
    lat0_deg: float  # latitude of the first row of posts (the northernmost)
    lon0_deg: float  # longitude of the first column of posts (the westernmost)
    dlat_deg: float  # post spacing, > 0
    dlon_deg: float  # post spacing, > 0
    rows: int
    cols: int

    @property
    def south_deg(self) -> float:
        return self.lat0_deg - (self.rows - 1) * self.dlat_deg

    @property
    def east_deg(self) -> float:
        return self.lon0_deg + (self.cols - 1) * self.dlon_deg

    def fractional_index(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """(row, col) of a point, longitude taken within 180 degrees of the first column."""
        d_lon = (lon_deg - self.lon0_deg + 180.0) % 360.0 - 180.0
        return (self.lat0_deg - lat_deg) / self.dlat_deg, d_lon / self.dlon_deg

    def post_spacing_m(self) -> float:
        """The larger post spacing in metres (sphere of the mean radius; for step sizes only)."""
        lat = math.radians(max(abs(self.lat0_deg), abs(self.south_deg)))
        metres_per_deg = 6_371_000.0 * math.pi / 180.0
        return metres_per_deg * max(self.dlat_deg, self.dlon_deg * max(math.cos(lat), 1e-3))


class HeightGrid:
    """One raster's posts in memory: bilinear heights and gradients, block maxima."""

    __slots__ = ("_flat", "block_levels", "cols", "extent", "max_m", "min_m", "rows")

    def __init__(self, extent: GridExtent, heights_hae_m: np.ndarray) -> None:
        if heights_hae_m.shape != (extent.rows, extent.cols):
            raise ValueError(f"{extent.name}: shape {heights_hae_m.shape} is not the header's")
        if extent.rows < 2 or extent.cols < 2:
            raise ValueError(f"{extent.name}: a DEM needs at least 2 x 2 posts")
        values = np.ascontiguousarray(heights_hae_m, dtype=np.float32)
        self.extent = extent
        self.rows, self.cols = extent.rows, extent.cols
        # a flat memoryview: indexing it gives Python floats ~5x faster than numpy scalar access
        self._flat = memoryview(values.reshape(-1))
        # (cells per block side, blocks per row, flat maxima): memoryviews index fast and, unlike
        # lists of Python floats, cost 8 bytes per block
        self.block_levels = tuple(_block_maxima(values, n) for n in BLOCK_LEVELS)
        finite = values[np.isfinite(values)]
        self.min_m = float(finite.min()) if finite.size else math.nan
        self.max_m = float(finite.max()) if finite.size else math.nan

    def post(self, row: int, col: int) -> float:
        return self._flat[row * self.cols + col]

    def contains(self, row: float, col: float) -> bool:
        """Whether the point's whole cell (all four posts) lies in this grid."""
        return 0.0 <= row <= self.rows - 1 and 0.0 <= col <= self.cols - 1

    def bilinear(self, row: float, col: float) -> tuple[float, float, float]:
        """(height, d height / d row, d height / d col) at a point inside the grid (NaN: nodata)."""
        i = min(int(row), self.rows - 2)
        j = min(int(col), self.cols - 2)
        fr, fc = row - i, col - j
        k = i * self.cols + j
        flat = self._flat
        z00, z01 = flat[k], flat[k + 1]
        z10, z11 = flat[k + self.cols], flat[k + self.cols + 1]
        twist = z11 - z10 - z01 + z00
        d_col = z01 - z00 + fr * twist
        d_row = z10 - z00 + fc * twist
        return z00 + fc * (z01 - z00) + fr * d_row, d_row, d_col

    def height(self, row: float, col: float) -> float:
        """The bilinear height alone (the march's hot path)."""
        i = min(int(row), self.rows - 2)
        j = min(int(col), self.cols - 2)
        fr, fc = row - i, col - j
        k = i * self.cols + j
        flat = self._flat
        z00, z01 = flat[k], flat[k + 1]
        z10, z11 = flat[k + self.cols], flat[k + self.cols + 1]
        top = z00 + fc * (z01 - z00)
        return top + fr * (z10 + fc * (z11 - z10) - top)

    def cell_max(self, row: float, col: float) -> float:
        """The highest of the four posts around a point inside the grid (NaN if any is nodata)."""
        i = min(int(row), self.rows - 2)
        j = min(int(col), self.cols - 2)
        k = i * self.cols + j
        flat = self._flat
        return max(flat[k], flat[k + 1], flat[k + self.cols], flat[k + self.cols + 1])


def _block_maxima(values: np.ndarray, b: int) -> tuple[int, int, memoryview]:
    """Max over the cells of each b x b block (posts on its far edges included)."""
    cells = np.maximum(
        np.maximum(values[:-1, :-1], values[1:, :-1]), np.maximum(values[:-1, 1:], values[1:, 1:])
    )  # NaN wherever a cell touches nodata (np.maximum propagates NaN)
    rows, cols = cells.shape
    padded = np.full((-(-rows // b) * b, -(-cols // b) * b), -np.inf, dtype=np.float32)
    padded[:rows, :cols] = cells
    padded[np.isnan(padded)] = np.inf
    blocks = padded.reshape(padded.shape[0] // b, b, padded.shape[1] // b, b).max(axis=(1, 3))
    flat = np.ascontiguousarray(blocks, dtype=np.float64).reshape(-1)  # Python floats when read
    return b, blocks.shape[1], memoryview(flat)


class HeightMosaic:
    """A set of grids (tiles) seen as one surface; tiles are loaded on first use and cached.

    ``loader`` reads one tile's heights (metres HAE, NaN nodata); at most ``cache_tiles`` stay in
    memory, least recently used first out.
    """

    def __init__(
        self,
        extents: Iterable[GridExtent],
        loader: Callable[[GridExtent], HeightGrid],
        *,
        cache_tiles: int = 8,
        description: str = "",
    ) -> None:
        self.extents = tuple(extents)
        if not self.extents:
            raise ValueError("a DEM needs at least one raster")
        self.description = description
        self.min_post_spacing_m = min(e.post_spacing_m() for e in self.extents)
        self._loader = loader
        self._cache: OrderedDict[GridExtent, HeightGrid] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_tiles = max(1, cache_tiles)
        self._index: dict[tuple[int, int], list[GridExtent]] = {}
        for extent in self.extents:
            for key in _degree_cells(extent):
                self._index.setdefault(key, []).append(extent)
        self._last: HeightGrid | None = None

    def grid(self, extent: GridExtent) -> HeightGrid:
        with self._lock:  # gunicorn threads share the cache; loads are rare, so one lock will do
            grid = self._cache.get(extent)
            if grid is None:
                grid = self._loader(extent)
                self._cache[extent] = grid
                while len(self._cache) > self._cache_tiles:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(extent)
            return grid

    def grid_at(self, lat_deg: float, lon_deg: float) -> tuple[HeightGrid, float, float] | None:
        """The grid whose cells hold the point, with the point's (row, col) in it."""
        last = self._last
        if last is not None:
            row, col = last.extent.fractional_index(lat_deg, lon_deg)
            if last.contains(row, col):
                return last, row, col
        for extent in self._index.get(_degree_key(lat_deg, lon_deg), ()):
            row, col = extent.fractional_index(lat_deg, lon_deg)
            if 0.0 <= row <= extent.rows - 1 and 0.0 <= col <= extent.cols - 1:
                grid = self.grid(extent)
                self._last = grid
                return grid, row, col
        return None

    def height(self, lat_deg: float, lon_deg: float) -> tuple[float, float, float, str]:
        """(height HAE m, d h / d lat per degree, d h / d lon per degree, tile name).

        NaN height where no raster has data: outside every tile or over nodata.
        """
        found = self.grid_at(lat_deg, lon_deg)
        if found is not None:
            grid, row, col = found
            h, d_row, d_col = grid.bilinear(row, col)
            ext = grid.extent
            return h, -d_row / ext.dlat_deg, d_col / ext.dlon_deg, ext.name
        return self._seam_height(lat_deg, lon_deg)

    def post_spacing_deg(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """(lat, lon) post spacing of the raster at a point (of a neighbour on a seam)."""
        found = self.grid_at(lat_deg, lon_deg)
        candidates = [found[0].extent] if found else self._candidates(lat_deg, lon_deg)
        extent = candidates[0] if candidates else self.extents[0]
        return extent.dlat_deg, extent.dlon_deg

    def _seam_height(self, lat_deg: float, lon_deg: float) -> tuple[float, float, float, str]:
        """A point between tiles: bilinear over posts taken from whichever tile has each one."""
        for extent in self._candidates(lat_deg, lon_deg):
            row, col = extent.fractional_index(lat_deg, lon_deg)
            if not (-1.0 <= row <= extent.rows and -1.0 <= col <= extent.cols):
                continue
            i, j = math.floor(row), math.floor(col)
            corners = [self._post_height(extent, ii, jj) for ii in (i, i + 1) for jj in (j, j + 1)]
            z00, z01, z10, z11 = corners
            fr, fc = row - i, col - j
            twist = z11 - z10 - z01 + z00
            d_col = z01 - z00 + fr * twist
            d_row = z10 - z00 + fc * twist
            h = z00 + fc * (z01 - z00) + fr * d_row
            return h, -d_row / extent.dlat_deg, d_col / extent.dlon_deg, extent.name
        return math.nan, 0.0, 0.0, ""

    def _post_height(self, extent: GridExtent, row: int, col: int) -> float:
        if 0 <= row < extent.rows and 0 <= col < extent.cols:
            return self.grid(extent).post(row, col)
        lat = extent.lat0_deg - row * extent.dlat_deg
        lon = extent.lon0_deg + col * extent.dlon_deg
        for other in self._candidates(lat, lon):
            if other is extent:
                continue
            r, c = other.fractional_index(lat, lon)
            ri, ci = round(r), round(c)
            if (
                abs(r - ri) <= _POST_TOLERANCE
                and abs(c - ci) <= _POST_TOLERANCE
                and 0 <= ri < other.rows
                and 0 <= ci < other.cols
            ):
                return self.grid(other).post(ri, ci)
            if 0.0 <= r <= other.rows - 1 and 0.0 <= c <= other.cols - 1:
                return self.grid(other).bilinear(r, c)[0]  # grids not aligned: interpolate
        return math.nan

    def _candidates(self, lat_deg: float, lon_deg: float) -> list[GridExtent]:
        # the index lists every tile under its extent grown by one post: its neighbours' seams too
        return self._index.get(_degree_key(lat_deg, lon_deg), [])


def _degree_key(lat_deg: float, lon_deg: float) -> tuple[int, int]:
    return math.floor(lat_deg), math.floor((lon_deg + 180.0) % 360.0 - 180.0)


def _degree_cells(extent: GridExtent) -> Iterable[tuple[int, int]]:
    """Every whole-degree cell that the extent (grown by one post each side) touches."""
    south = extent.south_deg - extent.dlat_deg
    north = extent.lat0_deg + extent.dlat_deg
    west = extent.lon0_deg - extent.dlon_deg
    east = extent.east_deg + extent.dlon_deg
    for lat in range(math.floor(south), math.floor(north) + 1):
        for lon in range(math.floor(west), math.floor(east) + 1):
            yield lat, (lon + 180) % 360 - 180
