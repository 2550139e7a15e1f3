"""geo.types: the core's value types are immutable named tuples whose field getters give their
values in declaration order (the batch path's row layout is built from them)."""

from __future__ import annotations

import pytest

from detection_api.geo.types import (
    CameraPose,
    ConfidenceFlag,
    Geolocation,
    InputSigmas,
    Intrinsics,
    Terrain,
    intrinsics_values,
    pose_values,
    sigma_values,
)

POSE = CameraPose(51.2, -1.8, 120.0, 80.0, 45.0, -30.0, 0.5)
GEO = Geolocation(
    51.2, -1.8, 80.0, 240.0, 200.0, 12.0, 9.0, 5.6, 5.5, (4.0, 0.5, 3.0), ConfidenceFlag.GREEN
)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (POSE, "lat_deg"),
        (GEO, "ce90_m"),
        (Intrinsics(1000.0, 1920.0, 1080.0, 960.0, 540.0), "cx_px"),
    ],
)
def test_values_cannot_be_changed_in_place(value: object, field: str) -> None:
    with pytest.raises(AttributeError):
        setattr(value, field, 0.0)


def test_a_changed_copy_keeps_the_rest() -> None:
    moved = GEO._replace(terrain=Terrain.DEM, dem="dem.tif")
    assert (moved.terrain, moved.dem, moved.lat_deg, moved.flag) == (
        Terrain.DEM,
        "dem.tif",
        51.2,
        ConfidenceFlag.GREEN,
    )
    assert (GEO.terrain, GEO.dem, GEO.terrain_note) == (Terrain.FLAT, None, None)


def test_field_getters_give_declaration_order() -> None:
    assert pose_values(POSE) == (51.2, -1.8, 120.0, 80.0, 45.0, -30.0, 0.5)
    assert intrinsics_values(Intrinsics(1.0, 2.0, 3.0, 4.0, 5.0)) == (1.0, 2.0, 3.0, 4.0, 5.0)
    sigmas = InputSigmas(
        position_m=1.0, altitude_m=2.0, heading_deg=3.0, pitch_deg=4.0, roll_deg=5.0, pixel=6.0
    )
    assert sigma_values(sigmas) == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
