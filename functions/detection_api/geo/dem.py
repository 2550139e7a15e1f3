"""Reading DEM rasters (``DEM_PATH``) through rasterio/GDAL into a ``HeightMosaic``.

``DEM_PATH`` is one raster or a directory of tiles (searched recursively): GeoTIFF (``.tif``,
``.tiff``: SRTM, Copernicus GLO-30 and 3DEP exports), DTED (``.dt0``, ``.dt1``, ``.dt2``), SRTM
``.hgt`` and GDAL ``.vrt`` mosaics. Every file must be a single-band north-up grid in geographic
WGS84 degrees (what SRTM, DTED and GLO-30 ship); anything else stops the process at start with one
line naming ``DEM_PATH`` and the file (reproject with ``gdalwarp -t_srs EPSG:4326``).

GDAL gives every format's posts at pixel centres (it shifts pixel-is-point GeoTIFFs and DTED by
half a pixel), so the post convention of geo/heightgrid.py holds for all of them. The file's nodata
value becomes NaN. ``DEM_VERTICAL_DATUM=geoid`` (the default: SRTM, DTED and GLO-30 heights are
above mean sea level) adds the geoid undulation at every post when a tile is loaded, so the ray
march works in ellipsoidal heights only; ``ellipsoid`` takes the heights as they are.

Only headers are read at start (one open per file). A tile's heights are read on first use and
kept in memory (float32, 52 MB for a 1" 3601 x 3601 tile) for the next detections; at most
``cache_tiles`` tiles stay loaded.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError

from detection_api.geo.geoid import GeoidModel
from detection_api.geo.heightgrid import GridExtent, HeightGrid, HeightMosaic

DEM_SUFFIXES = frozenset({".tif", ".tiff", ".dt0", ".dt1", ".dt2", ".hgt", ".vrt"})
VERTICAL_DATUMS = ("geoid", "ellipsoid")
DEFAULT_CACHE_TILES = 4


def open_dem(
    path: str,
    *,
    vertical_datum: str = "geoid",
    geoid: GeoidModel | None = None,
    cache_tiles: int = DEFAULT_CACHE_TILES,
) -> HeightMosaic:
    """The mosaic of every raster under ``path``; ValueError names the problem (a config error)."""
    if vertical_datum not in VERTICAL_DATUMS:
        raise ValueError(f"DEM_VERTICAL_DATUM must be geoid or ellipsoid, got {vertical_datum!r}")
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in DEM_SUFFIXES)
        if not files:
            raise ValueError(f"DEM_PATH: no {', '.join(sorted(DEM_SUFFIXES))} file under {path}")
    elif root.is_file():
        files = [root]
    else:
        raise ValueError(f"DEM_PATH: {path} does not exist")
    extents = {_read_extent(f): f for f in files}
    if vertical_datum == "geoid" and geoid is None:
        geoid = GeoidModel()
    lock = threading.Lock()

    def load(extent: GridExtent) -> HeightGrid:
        with lock:
            return _load_grid(extents[extent], extent, geoid if vertical_datum == "geoid" else None)

    plural = "s" if len(files) > 1 else ""
    description = f"{root.name} ({len(files)} raster{plural}, heights above the {vertical_datum})"
    return HeightMosaic(extents, load, cache_tiles=cache_tiles, description=description)


def _read_extent(path: Path) -> GridExtent:
    try:
        with rasterio.open(path) as ds:
            transform, crs, count = ds.transform, ds.crs, ds.count
            rows, cols = ds.height, ds.width
    except RasterioIOError as exc:
        raise ValueError(f"DEM_PATH: cannot read {path}: {exc}") from None
    if count != 1:
        raise ValueError(f"DEM_PATH: {path} has {count} bands; a DEM has one")
    if crs is None or not crs.is_geographic:
        raise ValueError(
            f"DEM_PATH: {path} is not in geographic WGS84 degrees "
            "(reproject it: gdalwarp -t_srs EPSG:4326)"
        )
    if transform.b != 0.0 or transform.d != 0.0 or transform.a <= 0.0 or transform.e >= 0.0:
        raise ValueError(f"DEM_PATH: {path} is not a north-up grid (rotated geotransform)")
    if rows < 2 or cols < 2:
        raise ValueError(f"DEM_PATH: {path} has fewer than 2 x 2 posts")
    return GridExtent(
        name=path.name,
        lat0_deg=transform.f + 0.5 * transform.e,  # centre of the first pixel
        lon0_deg=transform.c + 0.5 * transform.a,
        dlat_deg=-transform.e,
        dlon_deg=transform.a,
        rows=rows,
        cols=cols,
    )


def _load_grid(path: Path, extent: GridExtent, geoid: GeoidModel | None) -> HeightGrid:
    with rasterio.open(path) as ds:
        values = ds.read(1, out_dtype=np.float32)
        nodata = ds.nodata
    if nodata is not None:
        values[values == np.float32(nodata)] = np.nan
    values[~np.isfinite(values)] = np.nan
    if geoid is not None:
        lats = extent.lat0_deg - np.arange(extent.rows) * extent.dlat_deg
        lons = extent.lon0_deg + np.arange(extent.cols) * extent.dlon_deg
        values += geoid.grid(lats, lons)
    return HeightGrid(extent, values)
