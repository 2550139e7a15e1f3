"""The core with a DEM: altitude references, the flat fallback and how it is reported, the CoT,
the configuration, and ``detection-api geolocate`` with DEM_PATH in the environment."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from detection_api.core import CoreConfig, geolocate, geolocation_as_dict, process_detection
from detection_api.cot import DETAIL_ELEMENT
from detection_api.geo.dem import open_dem
from detection_api.geo.geoid import GeoidModel
from detection_api.geo.types import Terrain
from detection_api.model import Detection, parse_detection
from detection_api.settings import Settings
from support.dem_files import ARC_SECOND, reference_hit, write_dem
from test_cli_core import cli, fails, ok

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "detection.json"
NOW = datetime(2026, 11, 27, 2, 40, 16, tzinfo=UTC)
CAM_LAT, CAM_LON = 51.2185312, -1.8052475  # the example's camera (Salisbury Plain)


def hills(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Ground falling 8% towards the south-east, HAE (the example camera looks south-east)."""
    return 180.0 + 0.08 * 111_000.0 * (lat - CAM_LAT) - 0.08 * 69_700.0 * (lon - CAM_LON)


@pytest.fixture(scope="module")
def dem_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dem") / "salisbury.tif"
    return write_dem(
        path,
        hills,
        north_deg=CAM_LAT + 0.02,
        west_deg=CAM_LON - 0.02,
        rows=145,
        cols=145,
        spacing_deg=ARC_SECOND,
    )


@pytest.fixture(scope="module")
def config(dem_file: Path) -> CoreConfig:
    return CoreConfig(dem=open_dem(str(dem_file), vertical_datum="ellipsoid"), dem_sigma_m=4.0)


def detection(**meta: Any) -> Detection:
    data = json.loads(EXAMPLE.read_text())
    data.update(pixel_x=960.0, pixel_y=540.0)  # the optical axis: what reference_hit marches
    data["sensor_metadata"].update(roll=0.0, **meta)
    return parse_detection(data, now=NOW)


def ground_under_camera() -> float:
    return float(hills(np.array(CAM_LAT), np.array(CAM_LON)))


def test_ground_reference_puts_the_camera_above_the_dem(config: CoreConfig) -> None:
    geo = geolocate(detection(), config)  # location_elevation 120 m above the DEM
    assert geo.terrain is Terrain.DEM
    assert geo.dem == "salisbury.tif"
    camera_hae = ground_under_camera() + 120.0
    ref = reference_hit(CAM_LAT, CAM_LON, camera_hae, 135.0, -35.0, hills, 20_000.0)
    assert geo.slant_range_m == pytest.approx(ref[0], abs=0.05)
    assert geo.hae_m == pytest.approx(ref[3], abs=0.01)
    # falling ground: farther than the flat answer at the camera's ground height would say
    assert geo.slant_range_m > 120.0 / math.sin(math.radians(35.0)) + 10.0


def test_the_three_altitude_references_agree_on_the_same_camera(config: CoreConfig) -> None:
    camera_hae = ground_under_camera() + 120.0
    undulation = GeoidModel().undulation_m(CAM_LAT, CAM_LON)
    assert undulation == pytest.approx(48.0, abs=0.5)  # EGM2008 on Salisbury Plain
    ground = geolocate(detection(), config)
    ellipsoid = geolocate(
        detection(altitude_reference="ellipsoid", location_elevation=camera_hae), config
    )
    geoid = geolocate(
        detection(altitude_reference="geoid", location_elevation=camera_hae - undulation), config
    )
    for other in (ellipsoid, geoid):
        assert other.terrain is Terrain.DEM
        assert other.lat_deg == pytest.approx(ground.lat_deg, abs=1e-9)
        assert other.lon_deg == pytest.approx(ground.lon_deg, abs=1e-9)
    # the ground reference also carries the DEM's error under the camera: a larger le90
    assert ground.le90_m > ellipsoid.le90_m


def test_without_a_dem_the_references_resolve_against_ground_elevation() -> None:
    flat = geolocate(detection(), CoreConfig())  # 120 m above ground_elevation 177
    assert flat.terrain is Terrain.FLAT and flat.terrain_note is None
    hae = geolocate(
        detection(altitude_reference="ellipsoid", location_elevation=297.0), CoreConfig()
    )
    assert hae.terrain_note == "no_dem"
    assert (hae.lat_deg, hae.lon_deg) == pytest.approx((flat.lat_deg, flat.lon_deg), abs=1e-12)
    assert hae.hae_m == 177.0


def test_outside_the_dem_the_flat_ground_is_used_and_said(config: CoreConfig) -> None:
    far = detection(location_lat=CAM_LAT + 1.0)
    geo = geolocate(far, config)
    assert geo.terrain is Terrain.FLAT
    assert geo.terrain_note == "outside_dem"
    assert geo.hae_m == 177.0
    flat = geolocate(far, CoreConfig())
    assert (geo.lat_deg, geo.lon_deg, geo.ce90_m) == (flat.lat_deg, flat.lon_deg, flat.ce90_m)
    data = geolocation_as_dict(geo)
    assert data["terrain"] == "flat" and data["terrain_note"] == "outside_dem"


def test_cot_and_json_carry_the_terrain(config: CoreConfig) -> None:
    result = process_detection(
        detection(), config, record_id="r" * 32, detection_id="det-1", now=NOW
    )
    root = ET.fromstring(result.cot_xml)
    assert float(root.find("point").get("hae")) == pytest.approx(
        result.geolocation.hae_m, abs=0.005
    )
    mine = root.find(f"detail/{DETAIL_ELEMENT}")
    assert mine.get("terrain") == "dem"
    assert mine.get("dem") == "salisbury.tif"
    data = geolocation_as_dict(result.geolocation)
    assert data["terrain"] == "dem" and data["dem"] == "salisbury.tif"
    assert "terrain_note" not in data


def test_altitude_reference_is_validated() -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        detection(altitude_reference="sea")
    assert raised.value.errors()[0]["loc"] == ("sensor_metadata", "altitude_reference")
    # below the ellipsoid is a real place (and sea level is -32 m HAE at New York) ...
    assert detection(altitude_reference="ellipsoid", location_elevation=-20.0)
    # ... but not below the ground the camera flies over
    with pytest.raises(pydantic.ValidationError) as raised:
        detection(location_elevation=-20.0)
    assert raised.value.errors()[0]["loc"] == ("sensor_metadata", "location_elevation")


def test_bad_terrain_configuration_names_the_variable(tmp_path: Path, dem_file: Path) -> None:
    with pytest.raises(ValueError, match="DEM_PATH"):
        CoreConfig.from_settings(Settings(dem_path=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="GEOID_PATH"):
        CoreConfig.from_settings(Settings(geoid_path=str(tmp_path / "missing.tif")))
    with pytest.raises(pydantic.ValidationError, match="dem_vertical_datum"):
        Settings(dem_vertical_datum="msl")
    configured = CoreConfig.from_settings(
        Settings(dem_path=str(dem_file), dem_vertical_datum="ellipsoid", dem_sigma_m=2.5)
    )
    assert configured.dem is not None and configured.dem_sigma_m == 2.5


def test_cli_uses_the_same_environment(tmp_path: Path, dem_file: Path) -> None:
    payload = json.loads(EXAMPLE.read_text())
    payload.update(pixel_x=960.0, pixel_y=540.0)
    payload["sensor_metadata"]["roll"] = 0.0
    source = tmp_path / "det.json"
    source.write_text(json.dumps(payload))
    env = {"DEM_PATH": str(dem_file), "DEM_VERTICAL_DATUM": "ellipsoid"}
    out = json.loads(ok("geolocate", str(source), env=env))
    assert out["terrain"] == "dem" and out["dem"] == "salisbury.tif"
    assert out["hae_m"] == pytest.approx(
        geolocate(
            detection(), CoreConfig(dem=open_dem(str(dem_file), vertical_datum="ellipsoid"))
        ).hae_m,
        abs=1e-3,
    )
    cot = ok("cot", str(source), env=env)
    assert 'terrain="dem"' in cot
    err = fails("geolocate", str(source), env={"DEM_PATH": str(tmp_path / "nope")})
    assert err.startswith("error: configuration: DEM_PATH:"), err
    assert cli("geolocate", str(source)).returncode == 0
