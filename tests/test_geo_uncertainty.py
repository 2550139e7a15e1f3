"""Uncertainty: exact ce90, analytic Jacobian vs finite differences, Monte-Carlo calibration."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from detection_api.geo import uncertainty
from detection_api.geo.ellipsoid import (
    Vec3,
    enu_frame,
    meridian_radius_m,
    prime_vertical_radius_m,
)
from detection_api.geo.locate import DEFAULT_SIGMAS, locate, solve_ground_hit
from detection_api.geo.types import CameraPose, ConfidenceFlag, InputSigmas, Intrinsics
from detection_api.geo.uncertainty import (
    INPUT_NAMES,
    ce90_m,
    confidence_flag,
    principal_sigmas,
    probability_within_radius,
)

CAMERA = Intrinsics(focal_px=1200.0, width_px=1920.0, height_px=1080.0, cx_px=960.0, cy_px=540.0)
Z95 = NormalDist().inv_cdf(0.95)  # 1.6448536...
CIRCULAR_CE90 = math.sqrt(-2.0 * math.log(0.1))  # 2.1459660...


# --- ce90 of a 2-D normal ------------------------------------------------------------------------


def test_ce90_limits() -> None:
    for sigma in (0.3, 1.0, 17.0):
        assert ce90_m(sigma**2, 0.0, sigma**2) == pytest.approx(CIRCULAR_CE90 * sigma, rel=1e-10)
        assert ce90_m(sigma**2, 0.0, sigma**2) == pytest.approx(2.1460 * sigma, rel=1e-4)
        assert ce90_m(sigma**2, 0.0, 0.0) == pytest.approx(Z95 * sigma, rel=1e-10)
        assert ce90_m(0.0, 0.0, sigma**2) == pytest.approx(1.6449 * sigma, rel=1e-4)
    assert ce90_m(0.0, 0.0, 0.0) == 0.0


def _probability_within_by_angle(radius: float, sigma1: float, sigma2: float, nodes: int) -> float:
    """The textbook form, independent of the module's:
    P(r) = 1/(2 pi s1 s2) int_0^{2 pi} (1 - exp(-r^2 q / 2)) / q d th,  q = cos^2/s1^2 + sin^2/s2^2,
    by the trapezoid rule (periodic integrand)."""
    total = 0.0
    for j in range(nodes):
        theta = 2.0 * math.pi * j / nodes
        q = math.cos(theta) ** 2 / sigma1**2 + math.sin(theta) ** 2 / sigma2**2
        total += (1.0 - math.exp(-0.5 * radius * radius * q)) / q
    return total * (2.0 * math.pi / nodes) / (2.0 * math.pi * sigma1 * sigma2)


@pytest.mark.parametrize("ratio", [0.01, 0.03, 0.1, 0.25, 0.5, 0.77, 0.99, 1.0])
def test_ce90_holds_exactly_90_percent(ratio: float) -> None:
    sigma1, sigma2 = 12.0, 12.0 * ratio
    radius = ce90_m(sigma1**2, 0.0, sigma2**2)
    probability = _probability_within_by_angle(radius, sigma1, sigma2, nodes=40_000)
    assert probability == pytest.approx(0.90, abs=1e-7)
    # table interpolation: 1e-8 in probability, far inside the 1e-4 promise
    assert probability_within_radius(radius, sigma1, sigma2) == pytest.approx(0.90, abs=3e-8)
    # monotone between the limits
    assert Z95 * sigma1 <= radius <= CIRCULAR_CE90 * sigma1 + 1e-9


def test_ce90_interpolation_matches_direct_solution_between_table_nodes() -> None:
    worst = 0.0
    for i in range(200):
        ratio = (i + 0.37) / 200.0
        direct = uncertainty._solve_ce90_per_major_sigma(ratio, guess=1.8)
        worst = max(worst, abs(uncertainty._ce90_per_major_sigma(ratio) / direct - 1.0))
    assert worst < 1e-6


def test_ce90_table_quadrature_is_converged() -> None:
    for i in range(1, 52):
        ratio = i / 50
        radius = uncertainty._CE90_PER_MAJOR_SIGMA_TABLE[i]
        nodes = 4 * uncertainty._quarter_nodes(ratio)
        probability, _ = uncertainty._probability_and_density(radius, ratio, nodes)
        assert probability == pytest.approx(0.9, abs=1e-12)


def test_ce90_is_rotation_invariant_and_uses_the_ellipse() -> None:
    sigma1, sigma2 = 30.0, 4.0
    expected = ce90_m(sigma1**2, 0.0, sigma2**2)
    for angle_deg in (17.0, 45.0, 90.0, 133.0):
        c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
        var_e = c * c * sigma1**2 + s * s * sigma2**2
        var_n = s * s * sigma1**2 + c * c * sigma2**2
        cov_en = c * s * (sigma1**2 - sigma2**2)
        assert principal_sigmas(var_e, cov_en, var_n) == pytest.approx((sigma1, sigma2), rel=1e-12)
        assert ce90_m(var_e, cov_en, var_n) == pytest.approx(expected, rel=1e-12)
    # the circular shortcut (2.146 * rms sigma) would be 7% too small for this ellipse
    rms = math.sqrt((sigma1**2 + sigma2**2) / 2)
    assert 2.1460 * rms < 0.95 * expected


def test_ce90_against_sampled_normal() -> None:
    rng = random.Random(11)
    var_e, cov_en, var_n = 40.0, -25.0, 30.0
    # Cholesky factor of the covariance
    l11 = math.sqrt(var_e)
    l21 = cov_en / l11
    l22 = math.sqrt(var_n - l21 * l21)
    radius = ce90_m(var_e, cov_en, var_n)
    samples = 200_000
    inside = 0
    for _ in range(samples):
        z1, z2 = rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)
        if math.hypot(l11 * z1, l21 * z1 + l22 * z2) <= radius:
            inside += 1
    # binomial sd 0.00067: +-0.003 is 4.5 sd
    assert inside / samples == pytest.approx(0.90, abs=0.003)


def test_flag_boundaries_are_inclusive() -> None:
    assert confidence_flag(30.0, 30.0, 100.0) is ConfidenceFlag.GREEN
    assert confidence_flag(30.0001, 30.0, 100.0) is ConfidenceFlag.YELLOW
    assert confidence_flag(100.0, 30.0, 100.0) is ConfidenceFlag.YELLOW
    assert confidence_flag(100.0001, 30.0, 100.0) is ConfidenceFlag.RED


def test_default_sigmas_and_vertical() -> None:
    documented = InputSigmas(
        position_m=5.0, altitude_m=2.0, heading_deg=2.0, pitch_deg=1.0, roll_deg=1.0, pixel=2.0
    )
    assert documented == DEFAULT_SIGMAS
    assert uncertainty.le90_m(InputSigmas(1.0, 3.0, 1.0, 1.0, 1.0, 1.0)) == pytest.approx(
        3 * 1.6449
    )


# --- the analytic Jacobian against central finite differences -----------------------------------

GEOMETRIES = {
    "steep": (CameraPose(47.0, 8.0, 120.0, 400.0, 30.0, -70.0, 3.0), (1300.0, 700.0)),
    "oblique_rolled": (CameraPose(-35.0, 149.0, 300.0, 600.0, 200.0, -25.0, -12.0), (300.0, 900.0)),
    "shallow_far": (CameraPose(10.0, -60.0, 500.0, 0.0, 80.0, -4.0, 1.0), (1100.0, 560.0)),
    "near_pole": (CameraPose(89.99, 30.0, 400.0, 0.0, 135.0, -30.0, 5.0), (1500.0, 300.0)),
    "antimeridian": (CameraPose(-16.0, 179.999, 250.0, 20.0, 95.0, -20.0, 0.0), (100.0, 1000.0)),
}

PERTURBATION_STEPS = (0.01, 0.01, 0.01, 1e-4, 1e-4, 1e-4, 0.01, 0.01)  # m, m, m, deg x3, px x2


def perturbed(
    pose: CameraPose, pixel: tuple[float, float], deltas: tuple[float, ...]
) -> tuple[CameraPose, float, float]:
    """Apply errors in INPUT_NAMES order; camera east/north metres become lat/lon at its height."""
    d_east, d_north, d_height, d_heading, d_pitch, d_roll, d_px, d_py = deltas
    lat = math.radians(pose.lat_deg)
    camera_h = pose.ground_hae_m + pose.height_above_ground_m
    d_lat = d_north / (meridian_radius_m(lat) + camera_h)
    d_lon = d_east / ((prime_vertical_radius_m(lat) + camera_h) * math.cos(lat))
    moved = CameraPose(
        lat_deg=pose.lat_deg + math.degrees(d_lat),
        lon_deg=pose.lon_deg + math.degrees(d_lon),
        height_above_ground_m=pose.height_above_ground_m + d_height,
        ground_hae_m=pose.ground_hae_m,
        heading_deg=pose.heading_deg + d_heading,
        pitch_deg=pose.pitch_deg + d_pitch,
        roll_deg=pose.roll_deg + d_roll,
    )
    return moved, pixel[0] + d_px, pixel[1] + d_py


def _difference_en(point: Vec3, origin: Vec3, east: Vec3, north: Vec3) -> tuple[float, float]:
    d = (point[0] - origin[0], point[1] - origin[1], point[2] - origin[2])
    return (
        east[0] * d[0] + east[1] * d[1] + east[2] * d[2],
        north[0] * d[0] + north[1] * d[1] + north[2] * d[2],
    )


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_analytic_jacobian_matches_central_differences(geometry: str) -> None:
    pose, pixel = GEOMETRIES[geometry]
    nominal = solve_ground_hit(pose, CAMERA, *pixel)
    east, north, _ = enu_frame(nominal.crossing.lat_rad, nominal.crossing.lon_rad)
    for index, name in enumerate(INPUT_NAMES):
        step = PERTURBATION_STEPS[index]
        points = []
        for sign in (1.0, -1.0):
            deltas = tuple(sign * step if i == index else 0.0 for i in range(8))
            moved_pose, px, py = perturbed(pose, pixel, deltas)
            points.append(solve_ground_hit(moved_pose, CAMERA, px, py).crossing.point_ecef)
        de_plus = _difference_en(points[0], nominal.crossing.point_ecef, east, north)
        de_minus = _difference_en(points[1], nominal.crossing.point_ecef, east, north)
        numeric = ((de_plus[0] - de_minus[0]) / (2 * step), (de_plus[1] - de_minus[1]) / (2 * step))
        analytic = nominal.jacobian_en[index]
        scale = math.hypot(*numeric)
        assert scale > 0.0, name
        assert math.dist(analytic, numeric) < 1e-5 * scale + 1e-6, (name, analytic, numeric)


def test_position_error_turns_the_frame_near_the_pole() -> None:
    # 1 km from the pole a 1 m step east turns "north" by 1/1100 rad: at 500 m range that moves
    # the hit sideways by ~0.5 m on top of the 1 m shift (the frame-rotation term of the Jacobian)
    pose, pixel = GEOMETRIES["near_pole"]
    column = solve_ground_hit(pose, CAMERA, *pixel).jacobian_en[0]
    assert math.hypot(*column) > 1.2


# --- Monte-Carlo calibration ------------------------------------------------------------------

# First-order propagation holds where one sigma moves the hit by a small fraction of its range:
# no grazing rays here (depression >= 20 deg). "anisotropic" makes heading dominate, a long thin
# ellipse across the line of sight.
CALIBRATION_CASES = {
    "steep": (GEOMETRIES["steep"], DEFAULT_SIGMAS),
    "oblique": (GEOMETRIES["oblique_rolled"], DEFAULT_SIGMAS),
    "anisotropic": (
        (CameraPose(52.0, 13.0, 400.0, 30.0, 300.0, -40.0, 0.0), (960.0, 540.0)),
        InputSigmas(
            position_m=0.5, altitude_m=0.5, heading_deg=5.0, pitch_deg=0.2, roll_deg=0.2, pixel=1.0
        ),
    ),
    "position_dominated": (
        (CameraPose(-5.0, -40.0, 60.0, 0.0, 10.0, -60.0, 0.0), (700.0, 800.0)),
        InputSigmas(
            position_m=8.0, altitude_m=0.3, heading_deg=0.3, pitch_deg=0.2, roll_deg=0.2, pixel=0.5
        ),
    ),
}


@pytest.mark.parametrize("case", CALIBRATION_CASES)
def test_monte_carlo_lands_inside_ce90_ninety_percent_of_the_time(case: str) -> None:
    (pose, pixel), sigmas = CALIBRATION_CASES[case]
    nominal = locate(pose, CAMERA, *pixel, sigmas)
    hit = solve_ground_hit(pose, CAMERA, *pixel).crossing
    east, north, _ = enu_frame(hit.lat_rad, hit.lon_rad)
    sigma_vector = uncertainty.input_sigma_vector(sigmas)
    rng = random.Random(f"calibration-{case}")
    samples = 20_000
    inside = 0
    sum_ee = sum_en = sum_nn = 0.0
    for _ in range(samples):
        deltas = tuple(rng.gauss(0.0, sigma) for sigma in sigma_vector)
        moved_pose, px, py = perturbed(pose, pixel, deltas)
        point = solve_ground_hit(moved_pose, CAMERA, px, py).crossing.point_ecef
        de, dn = _difference_en(point, hit.point_ecef, east, north)
        inside += math.hypot(de, dn) <= nominal.ce90_m
        sum_ee += de * de
        sum_en += de * dn
        sum_nn += dn * dn
    fraction = inside / samples
    assert 0.89 <= fraction <= 0.91, fraction
    # the predicted covariance itself, not just one quantile (sampling sd of a variance ~1%)
    var_e, cov_en, var_n = nominal.covariance_en_m2
    scale = var_e + var_n
    assert sum_ee / samples == pytest.approx(var_e, abs=0.05 * scale)
    assert sum_nn / samples == pytest.approx(var_n, abs=0.05 * scale)
    assert sum_en / samples == pytest.approx(cov_en, abs=0.05 * scale)


def test_zero_sigmas_give_a_point_and_scale_linearly() -> None:
    pose, pixel = GEOMETRIES["steep"]
    exact = locate(pose, CAMERA, *pixel, InputSigmas(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    assert exact.ce90_m == 0.0
    assert exact.covariance_en_m2 == (0.0, 0.0, 0.0)
    assert exact.flag is ConfidenceFlag.GREEN
    one = locate(pose, CAMERA, *pixel, InputSigmas(0.0, 0.0, 1.0, 0.0, 0.0, 0.0)).ce90_m
    three = locate(pose, CAMERA, *pixel, InputSigmas(0.0, 0.0, 3.0, 0.0, 0.0, 0.0)).ce90_m
    assert one > 0.0
    assert three == pytest.approx(3.0 * one, rel=1e-12)
