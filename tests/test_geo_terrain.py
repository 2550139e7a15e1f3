"""The terrain ray march on synthetic DEMs written here, against an independent reference march.

Every surface is bilinear between its posts (planes in latitude/longitude, ridges whose kinks sit
on post lines), so the DEM represents it exactly and the reference (support/dem_files.py: pymap3d
geodetics, dense sampling, bisection) can use the analytic function itself. Promise checked: the
hit within 5 cm of the reference for slant ranges up to 20 km, through tile seams and in DTED.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pymap3d
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from detection_api.geo.dem import open_dem
from detection_api.geo.geoid import GeoidModel, default_geoid_path
from detection_api.geo.heightgrid import HeightMosaic
from detection_api.geo.locate import DEFAULT_SIGMAS
from detection_api.geo.terrain import TerrainMiss
from detection_api.geo.terrain_locate import locate_on_terrain
from detection_api.geo.types import (
    CameraPose,
    Geolocation,
    GeolocationError,
    Intrinsics,
    NoGroundIntersection,
    Terrain,
)
from support.dem_files import ARC_SECOND, post_axes, reference_hit, write_dem

CAMERA = Intrinsics(focal_px=1400.0, width_px=1920.0, height_px=1080.0, cx_px=960.0, cy_px=540.0)
TOLERANCE_M = 0.05
SPACING = 3 * ARC_SECOND  # ~90 m posts: 20 km rays in small files
LAT0, LON0 = 45.0, 7.0


def plane(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Rises 800 m per degree north and 300 m per degree east (0.4 deg and 0.2 deg of slope)."""
    return 200.0 + 800.0 * (lat - LAT0) + 300.0 * (lon - LON0)


def plane_dem(tmp_path: Path, **kwargs: object) -> Path:
    options: dict[str, object] = {
        "north_deg": LAT0 + 0.2,
        "west_deg": LON0 - 0.1,
        "rows": 361,
        "cols": 481,
        "spacing_deg": SPACING,
    }
    options.update(kwargs)
    return write_dem(tmp_path / "plane.tif", plane, **options)  # type: ignore[arg-type]


def locate_axis(
    dem: HeightMosaic, lat: float, lon: float, hae: float, heading: float, pitch: float
) -> Geolocation | TerrainMiss:
    pose = CameraPose(lat, lon, 0.0, 0.0, heading, pitch, 0.0)
    return locate_on_terrain(
        pose, CAMERA, 960.0, 540.0, DEFAULT_SIGMAS, dem=dem, camera_hae_m=hae, dem_sigma_m=5.0
    )


def distance_m(a: Geolocation, ref: tuple[float, float, float, float]) -> float:
    pa = np.array(pymap3d.geodetic2ecef(a.lat_deg, a.lon_deg, a.hae_m))
    pb = np.array(pymap3d.geodetic2ecef(ref[1], ref[2], ref[3]))
    return float(np.linalg.norm(pa - pb))


# --- a tilted plane, slant ranges up to 20 km -----------------------------------------------


@pytest.mark.parametrize("pitch", [-89.0, -60.0, -30.0, -10.0, -4.0, -3.1])
def test_tilted_plane_matches_the_reference_to_20_km(tmp_path: Path, pitch: float) -> None:
    dem = open_dem(str(plane_dem(tmp_path)), vertical_datum="ellipsoid")
    camera = (LAT0 + 0.01, LON0 + 0.01, 1300.0, 40.0)  # heading 40: across both slopes
    got = locate_axis(dem, *camera[:3], camera[3], pitch)
    assert isinstance(got, Geolocation)
    ref = reference_hit(*camera, pitch, plane, 20_000.0)
    assert distance_m(got, ref) < TOLERANCE_M
    assert got.slant_range_m == pytest.approx(ref[0], abs=TOLERANCE_M)
    assert got.terrain is Terrain.DEM
    assert got.dem == "plane.tif"
    # the hit is on the surface: its HAE is the plane's height there
    assert got.hae_m == pytest.approx(
        float(plane(np.array(got.lat_deg), np.array(got.lon_deg))), abs=1e-3
    )
    if pitch == -3.1:
        assert ref[0] > 15_000.0  # the long end of the promise is exercised


def test_a_ray_that_meets_no_terrain_within_range_is_an_error(tmp_path: Path) -> None:
    dem = open_dem(str(plane_dem(tmp_path)), vertical_datum="ellipsoid")
    with pytest.raises(GeolocationError) as raised:
        pose = CameraPose(LAT0 + 0.01, LON0 + 0.01, 0.0, 0.0, 40.0, -3.1, 0.0)
        locate_on_terrain(
            pose,
            CAMERA,
            960.0,
            540.0,
            DEFAULT_SIGMAS,
            dem=dem,
            camera_hae_m=1300.0,
            dem_sigma_m=5.0,
            max_range_m=10_000.0,
        )
    assert raised.value.reason is NoGroundIntersection.BEYOND_MAX_RANGE


def test_a_camera_under_the_terrain_is_an_error(tmp_path: Path) -> None:
    dem = open_dem(str(plane_dem(tmp_path)), vertical_datum="ellipsoid")
    with pytest.raises(GeolocationError) as raised:
        locate_axis(dem, LAT0, LON0, 150.0, 0.0, -30.0)  # the plane is at 200 m there
    assert raised.value.reason is NoGroundIntersection.CAMERA_BELOW_GROUND


# --- a ridge hides the valley behind it -------------------------------------------------------

RIDGE_LON = LON0 + 20 * SPACING  # ~1.3 km east of the camera


def ridge(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """A valley floor at 100 m with a 250 m high ridge running north-south; its flanks are 6 posts
    wide and its kinks sit on post columns, so the DEM's bilinear surface is exactly this."""
    distance_posts = np.abs(lon - RIDGE_LON) / SPACING
    return 100.0 + 250.0 * np.clip(1.0 - distance_posts / 6.0, 0.0, None) + 0.0 * lat


@pytest.mark.parametrize(("pitch", "on_ridge"), [(-9.0, True), (-6.0, True), (-2.0, False)])
def test_a_ridge_occludes_the_valley(tmp_path: Path, pitch: float, on_ridge: bool) -> None:
    path = write_dem(
        tmp_path / "ridge.tif",
        ridge,
        north_deg=LAT0 + 0.1,
        west_deg=LON0 - 0.05,
        rows=241,
        cols=481,
        spacing_deg=SPACING,
    )
    dem = open_dem(str(path), vertical_datum="ellipsoid")
    camera = (LAT0, LON0, 400.0, 90.0)  # 300 m above the valley, looking east at the ridge
    got = locate_axis(dem, *camera[:3], camera[3], pitch)
    assert isinstance(got, Geolocation)
    ref = reference_hit(*camera, pitch, ridge, 20_000.0)
    assert distance_m(got, ref) < TOLERANCE_M
    flat_valley_range = 300.0 / math.sin(math.radians(-pitch))  # where a ridge-less valley is hit
    if on_ridge:
        assert got.hae_m > 150.0  # on the ridge's face, well above the valley floor
        assert got.slant_range_m < flat_valley_range - 100.0
    else:
        assert got.hae_m == pytest.approx(100.0, abs=1e-3)  # over the ridge, into the far valley
        assert got.lon_deg > RIDGE_LON + 6 * SPACING


# --- tiles and seams --------------------------------------------------------------------------


@pytest.mark.parametrize("shared_edges", [True, False])
def test_tile_seams_are_continuous(tmp_path: Path, shared_edges: bool) -> None:
    """2 x 2 tiles of the plane, either sharing their edge posts (SRTM, DTED) or not (each tile
    stops one post short: the cells between tiles take posts from both)."""
    whole = open_dem(str(plane_dem(tmp_path)), vertical_datum="ellipsoid")
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    half_rows, half_cols = 180, 240
    overlap = 1 if shared_edges else 0
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        write_dem(
            tiles / f"tile_{i}{j}.tif",
            plane,
            north_deg=LAT0 + 0.2 - i * half_rows * SPACING,
            west_deg=LON0 - 0.1 + j * half_cols * SPACING,
            rows=half_rows + (overlap if i == 0 else 1),
            cols=half_cols + (overlap if j == 0 else 1),
            spacing_deg=SPACING,
        )
    mosaic = open_dem(str(tiles), vertical_datum="ellipsoid")
    assert len(mosaic.extents) == 4
    seam_lat = LAT0 + 0.2 - (half_rows - 0.5) * SPACING  # between the tiles' rows of posts
    seam_lon = LON0 - 0.1 + (half_cols - 0.3) * SPACING
    for lat, lon in ((seam_lat, LON0), (LAT0 + 0.05, seam_lon), (seam_lat, seam_lon)):
        height = mosaic.height(lat, lon)[0]
        assert height == pytest.approx(float(plane(np.array(lat), np.array(lon))), abs=1e-3)
    # rays from the south-west tile into the other three, crossing the seams
    camera = (LAT0 + 0.05, LON0 + 0.05, 1200.0)
    seam_at = (LAT0 + 0.2 - half_rows * SPACING, LON0 - 0.1 + half_cols * SPACING)
    for heading in (10.0, 45.0, 80.0):
        for pitch in (-5.0, -8.0):
            got = locate_axis(mosaic, *camera, heading, pitch)
            one = locate_axis(whole, *camera, heading, pitch)
            assert isinstance(got, Geolocation) and isinstance(one, Geolocation)
            assert got.slant_range_m == pytest.approx(one.slant_range_m, abs=1e-3)
            ref = reference_hit(*camera, heading, pitch, plane, 20_000.0)
            assert distance_m(got, ref) < TOLERANCE_M
            crossed = got.lat_deg > seam_at[0] or got.lon_deg > seam_at[1]
            assert crossed, (heading, pitch)


def test_dted_tiles_are_read(tmp_path: Path) -> None:
    """A DTED level 1 cell (3" posts, 1201 x 1201, whole metres) written by GDAL's DTED driver."""
    spacing = 1.0 / 1200.0

    def ramp(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        # 1 m per post eastwards: whole metres at every post, which int16 DTED stores exactly
        return 300.0 + np.round((lon - 7.0) / spacing) + 0.0 * lat

    source = write_dem(
        tmp_path / "cell.tif",
        ramp,
        north_deg=46.0,
        west_deg=7.0,
        rows=1201,
        cols=1201,
        spacing_deg=spacing,
    )
    dted = tmp_path / "n45e007.dt1"
    with rasterio.open(source) as src:
        profile = src.profile
    assert profile["height"] == 1201
    rasterio.shutil.copy(source, dted, driver="DTED")
    dem = open_dem(str(dted), vertical_datum="ellipsoid")
    (extent,) = dem.extents
    assert extent.lat0_deg == pytest.approx(46.0, abs=1e-9)
    assert extent.lon0_deg == pytest.approx(7.0, abs=1e-9)
    assert dem.height(45.5, 7.5)[0] == pytest.approx(300.0 + 600.0, abs=1e-6)
    camera = (45.5, 7.2, 1500.0, 90.0)
    got = locate_axis(dem, *camera[:3], camera[3], -20.0)
    assert isinstance(got, Geolocation)
    ref = reference_hit(*camera, -20.0, lambda la, lo: 300.0 + (lo - 7.0) / spacing, 20_000.0)
    assert distance_m(got, ref) < TOLERANCE_M


def test_pixel_is_point_and_pixel_is_area_put_posts_in_the_same_place(tmp_path: Path) -> None:
    options = {"north_deg": 45.1, "west_deg": 6.9, "rows": 40, "cols": 50, "spacing_deg": SPACING}
    area = open_dem(
        str(write_dem(tmp_path / "a.tif", plane, **options)), vertical_datum="ellipsoid"
    )
    point_path = write_dem(tmp_path / "p.tif", plane, area_or_point="Point", **options)
    with rasterio.open(point_path) as ds:
        assert ds.tags()["AREA_OR_POINT"] == "Point"
    point = open_dem(str(point_path), vertical_datum="ellipsoid")
    lats, lons = post_axes(45.1, 6.9, 40, 50, SPACING)
    for lat, lon in ((lats[3], lons[7]), (lats[20], lons[33]), (45.08, 6.93)):
        expected = float(plane(np.array(lat), np.array(lon)))
        assert area.height(lat, lon)[0] == pytest.approx(expected, abs=1e-3)
        assert point.height(lat, lon)[0] == pytest.approx(expected, abs=1e-3)


# --- nodata and coverage ----------------------------------------------------------------------


def test_nodata_on_the_path_and_outside_coverage_are_misses(tmp_path: Path) -> None:
    path = plane_dem(
        tmp_path, nodata=-9999.0, holes=[(slice(100, 140), slice(150, 200))]
    )  # a hole ~1.5 km north-east of the camera
    dem = open_dem(str(path), vertical_datum="ellipsoid")
    camera_lat = LAT0 + 0.2 - 160 * SPACING
    camera_lon = LON0 - 0.1 + 140 * SPACING
    over_hole = locate_axis(dem, camera_lat, camera_lon, 1200.0, 45.0, -12.0)
    assert over_hole == TerrainMiss("dem_nodata", pytest.approx(over_hole.range_m))
    away = locate_axis(dem, camera_lat, camera_lon, 1200.0, 225.0, -12.0)
    assert isinstance(away, Geolocation)
    beyond_edge = locate_axis(dem, camera_lat, camera_lon, 1200.0, 270.0, -2.0)
    assert isinstance(beyond_edge, TerrainMiss)
    assert beyond_edge.reason == "outside_dem"
    outside = locate_axis(dem, LAT0 + 1.0, LON0, 1200.0, 0.0, -30.0)
    assert outside == TerrainMiss("outside_dem", 0.0)


def test_configuration_errors_name_dem_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"DEM_PATH: .* does not exist"):
        open_dem(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"DEM_PATH: no .* file under"):
        open_dem(str(tmp_path / "empty"))
    (tmp_path / "junk.tif").write_text("not a raster")
    with pytest.raises(ValueError, match="DEM_PATH: cannot read"):
        open_dem(str(tmp_path / "junk.tif"))
    projected = tmp_path / "utm.tif"
    with rasterio.open(
        projected,
        "w",
        driver="GTiff",
        height=4,
        width=4,
        count=1,
        dtype="float32",
        crs="EPSG:32632",
        transform=Affine(30.0, 0.0, 300_000.0, 0.0, -30.0, 5_000_000.0),
    ) as ds:
        ds.write(np.zeros((4, 4), dtype=np.float32), 1)
    with pytest.raises(ValueError, match=r"DEM_PATH: .* not in geographic WGS84"):
        open_dem(str(projected))
    with pytest.raises(ValueError, match="DEM_VERTICAL_DATUM"):
        open_dem(str(plane_dem(tmp_path)), vertical_datum="msl")


# --- vertical datums --------------------------------------------------------------------------


def _egm2008_bilinear(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """N from the raw EGM2008 grid values, interpolated here (not through geo/geoid.py)."""
    with rasterio.open(default_geoid_path()) as ds:
        step = ds.transform.a
        rows = (90.0 - lat) / step
        cols = (lon % 360.0) / step
        r0, c0 = int(rows.min()), int(cols.min())
        window = ds.read(
            1, window=Window(c0, r0, int(cols.max()) - c0 + 2, int(rows.max()) - r0 + 2)
        ).astype(np.float64)
    r, c = rows - r0, cols - c0
    i, j = np.floor(r).astype(int), np.floor(c).astype(int)
    fr, fc = r - i, c - j
    return (
        window[i, j] * (1 - fr) * (1 - fc)
        + window[i, j + 1] * (1 - fr) * fc
        + window[i + 1, j] * fr * (1 - fc)
        + window[i + 1, j + 1] * fr * fc
    )


def test_egm2008_undulations_are_the_published_ones() -> None:
    geoid = GeoidModel()
    assert geoid.undulation_m(51.2, -1.8) == pytest.approx(48.0, abs=0.1)
    assert geoid.undulation_m(40.7, -74.0) == pytest.approx(-32.7, abs=0.1)
    # at a grid post exactly the stored value, and the grid form agrees with the point form
    with rasterio.open(default_geoid_path()) as ds:
        stored = float(ds.read(1, window=Window(8641 // 2, 4321 // 2, 1, 1))[0, 0])
    post_lon = (8641 // 2) * ds.transform.a
    post_lat = 90.0 - (4321 // 2) * ds.transform.a
    assert geoid.undulation_m(post_lat, post_lon) == pytest.approx(stored, abs=1e-5)
    lats, lons = np.array([45.01, 45.2]), np.array([6.95, 7.1])
    grid = geoid.grid(lats, lons)
    for a, lat in enumerate(lats):
        for b, lon in enumerate(lons):
            assert grid[a, b] == pytest.approx(geoid.undulation_m(lat, lon), abs=1e-4)


def test_a_geoid_referenced_dem_is_converted_to_ellipsoidal_heights(tmp_path: Path) -> None:
    """The file holds orthometric heights (plane minus N); the hits must land on the plane HAE."""

    def orthometric(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        lat_b, lon_b = np.broadcast_arrays(lat, lon)
        return plane(lat_b, lon_b) - _egm2008_bilinear(lat_b, lon_b)

    path = write_dem(
        tmp_path / "msl.tif",
        orthometric,
        north_deg=LAT0 + 0.2,
        west_deg=LON0 - 0.1,
        rows=361,
        cols=481,
        spacing_deg=SPACING,
    )
    geoid_dem = open_dem(str(path), vertical_datum="geoid")
    as_ellipsoid = open_dem(str(path), vertical_datum="ellipsoid")
    camera = (LAT0 + 0.01, LON0 + 0.01, 1300.0, 40.0)
    got = locate_axis(geoid_dem, *camera[:3], camera[3], -20.0)
    wrong = locate_axis(as_ellipsoid, *camera[:3], camera[3], -20.0)
    assert isinstance(got, Geolocation) and isinstance(wrong, Geolocation)
    ref = reference_hit(*camera, -20.0, plane, 20_000.0)
    # N is ~48-50 m here: float32 storage and bilinear N between 2.5' posts leave < 1 cm
    assert distance_m(got, ref) < TOLERANCE_M
    assert distance_m(wrong, ref) > 100.0  # mixing the datums would be ~50 m vertical


def test_the_geoid_window_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from detection_api.geo import geoid as geoid_module

    monkeypatch.setattr(geoid_module, "MAX_WINDOWS", 3)
    geoid = GeoidModel()
    values = [geoid.undulation_m(lat, 10.0) for lat in (-60.0, -30.0, 0.0, 30.0, 60.0)]
    assert len(geoid._windows) == 3
    # an evicted window is read again and gives the same answer
    assert geoid.undulation_m(-60.0, 10.0) == values[0]
