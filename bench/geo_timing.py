"""Timing of locate() against a same-run baseline: one pymap3d geodetic->ECEF->geodetic round trip.

Run: .venv/bin/python bench/geo_timing.py   (or import ``measure_locate`` from other benchmarks).
Figures are the best of several repeats (least disturbed by other processes on a shared machine);
compare the ratio, not the absolute microseconds, between machines.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from detection_api.geo.locate import DEFAULT_SIGMAS, locate, solve_ground_hit
from detection_api.geo.locate_batch import locate_many
from detection_api.geo.types import CameraPose, Intrinsics

POSE = CameraPose(
    lat_deg=47.0,
    lon_deg=8.0,
    height_above_ground_m=100.0,
    ground_hae_m=400.0,
    heading_deg=30.0,
    pitch_deg=-30.0,
    roll_deg=2.0,
)
CAMERA = Intrinsics(focal_px=1000.0, width_px=1920.0, height_px=1080.0, cx_px=960.0, cy_px=540.0)


def best_microseconds(call: Callable[[], object], number: int = 5000, repeat: int = 7) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


BATCH = [(POSE, CAMERA, 20.0 + 19.0 * i, 560.0 + 5.0 * i, DEFAULT_SIGMAS) for i in range(100)]


def measure_locate(number: int = 5000, repeat: int = 7) -> dict[str, float]:
    """Microseconds per call of locate(), its geometry half, per detection of locate_many() over
    100 pixels, and the pymap3d baseline."""
    figures = {
        "locate_us": best_microseconds(lambda: locate(POSE, CAMERA, 1200.0, 700.0), number, repeat),
        "geometry_only_us": best_microseconds(
            lambda: solve_ground_hit(POSE, CAMERA, 1200.0, 700.0), number, repeat
        ),
        "locate_many_per_detection_us": best_microseconds(
            lambda: locate_many(BATCH), max(number // 100, 1), repeat
        )
        / len(BATCH),
    }
    try:
        import pymap3d
    except ImportError:  # a test-only dependency: no baseline without it
        return figures

    def round_trip() -> object:
        return pymap3d.ecef2geodetic(*pymap3d.geodetic2ecef(47.0, 8.0, 500.0))

    figures["pymap3d_round_trip_us"] = best_microseconds(round_trip, number, repeat)
    figures["locate_per_round_trip"] = figures["locate_us"] / figures["pymap3d_round_trip_us"]
    return figures


if __name__ == "__main__":
    for name, value in measure_locate().items():
        print(f"{name:30s} {value:8.2f}")
