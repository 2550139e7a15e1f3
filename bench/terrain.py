"""Cost of geolocating on a DEM: the example detection on rolling synthetic terrain (1" posts,
heights above the geoid, so the EGM2008 conversion runs at load), tile warm in memory.

Baseline: the same detection on the flat ground (no DEM), timed interleaved in the same run. The
target (issue 11) is that the DEM lookup + ray march add at most 50 us per detection.
"""

from __future__ import annotations

import json
import math
import tempfile
import timeit
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from bench import Row, compare_microseconds
from detection_api.core import CoreConfig, process_detection
from detection_api.geo.dem import open_dem
from detection_api.model import parse_detection

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "detection.json"
UNIT = "us/detection"
SPACING = 1.0 / 3600.0
SIZE = 721  # 0.2 degree square: ~22 x 14 km around the camera


def rolling_hills(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Orthometric heights: 130 m plain with 40 m hills ~1.5 km apart (Salisbury Plain-like)."""
    y = (lat - 51.2) * 111_000.0
    x = (lon + 1.8) * 69_700.0
    return 130.0 + 25.0 * np.sin(x / 240.0) * np.cos(y / 310.0) + 15.0 * np.sin((x + y) / 530.0)


def write_tile(directory: Path, north: float, west: float) -> Path:
    lats = north - np.arange(SIZE) * SPACING
    lons = west + np.arange(SIZE) * SPACING
    heights = rolling_hills(lats[:, None], lons[None, :]).astype(np.float32)
    path = directory / "hills.tif"
    transform = Affine(SPACING, 0.0, west - SPACING / 2, 0.0, -SPACING, north + SPACING / 2)
    with rasterio.open(
        path, "w", driver="GTiff", height=SIZE, width=SIZE, count=1, dtype="float32",
        crs="EPSG:4326", transform=transform,
    ) as ds:  # fmt: skip
        ds.write(heights, 1)
    return path


def run() -> list[Row]:
    payload = json.loads(EXAMPLE.read_text())
    now = datetime.now(UTC)
    det = parse_detection(payload, now=now)
    meta = det.sensor_metadata
    flat = CoreConfig()
    with tempfile.TemporaryDirectory(prefix="bench-dem-") as tmp:
        tile = write_tile(Path(tmp), meta.location_lat + 0.1, meta.location_lon - 0.1)
        terrain = CoreConfig(dem=open_dem(str(tile), vertical_datum="geoid"))
        warm = process_detection(det, terrain, record_id="0" * 32, detection_id="b", now=now)
        assert warm.geolocation.terrain.value == "dem"
        slant = warm.geolocation.slant_range_m

        def on_flat() -> object:
            return process_detection(det, flat, record_id="0" * 32, detection_id="b", now=now)

        def on_dem() -> object:
            return process_detection(det, terrain, record_id="0" * 32, detection_id="b", now=now)

        base, results = compare_microseconds(on_flat, {"dem": on_dem})
        # The least disturbed of many interleaved rounds: on a shared machine the medians above
        # carry the neighbours' load, the minimum is the code's own cost.
        flat_best = dem_best = math.inf
        for _ in range(25):
            flat_best = min(flat_best, timeit.timeit(on_flat, number=200) / 200 * 1e6)
            dem_best = min(dem_best, timeit.timeit(on_dem, number=200) / 200 * 1e6)
    value, ratio = results["dem"]
    baseline_name = "process_detection on the flat ground (same run)"
    return [
        Row(
            f'process_detection on a 1" DEM (warm tile, hit {slant:.0f} m away)',
            value,
            UNIT,
            base,
            baseline_name,
            ratio,
        ),
        Row(
            "DEM lookup + ray march added per detection (target <= 50)",
            value - base,
            UNIT,
            base,
            baseline_name,
            (value - base) / base if base else math.nan,
        ),
        Row(
            "DEM lookup + ray march added, best of 25 rounds (target <= 50)",
            dem_best - flat_best,
            UNIT,
            flat_best,
            "process_detection on the flat ground, best of 25 rounds",
            (dem_best - flat_best) / flat_best,
        ),
    ]
