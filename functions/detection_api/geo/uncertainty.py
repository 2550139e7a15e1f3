"""First-order propagation of the input errors to the hit, and the exact 90% error circle.

Inputs are independent zero-mean 1-sigma errors (``InputSigmas``): camera position east and north
(each ``position_m``), camera height (``altitude_m``), heading, pitch and roll (degrees) and the
pixel on each image axis. The horizontal covariance of the hit, in East/North metres at the hit, is
``Sigma = J diag(sigma^2) J^T`` with J the analytic Jacobian of the hit's East/North offsets with
respect to those eight inputs.

Jacobian: the hit is X = C + t d (camera C, unnormalised ray d) on the surface of constant geodetic
height, whose normal at the hit is n (local up there). A perturbation gives dX = dC + t dd + dt d
with n . dX = 0, so dt = -n . (dC + t dd) / (n . d); dX is then projected on East/North at the hit.
dd comes from ``camera.ray_partials_enu`` for attitude and pixel. A camera position error also
turns the camera's own ENU frame (the ray is fixed relative to it): moving east by dE changes the
longitude by dE / ((N + h) cos lat), moving north changes the latitude by dN / (M + h), and the
derivatives of the ENU unit vectors give the extra dd below. Near a pole that term grows like
tan(lat), because a heading measured from north genuinely becomes ill-defined: it is linear and
correct 1 km from the pole (tested), overstated within a few position sigmas of it, and at the pole
itself ce90 comes out enormous (finite, flag RED) instead of the true "anywhere within the ground
distance" answer.
First-order propagation is valid while the ray is not grazing: when the hit moves by a sizeable
fraction of its range within one sigma of pitch, the true error distribution is skewed and these
numbers understate its far tail.

Vertical: the hit lies on the ground plane by construction, so its vertical uncertainty is how well
the ground height relative to the camera is known, taken as the camera height error:
``le90 = 1.6449 * altitude_m`` (the two-sided 90% quantile of a normal).

ce90: the radius r with P(|e| <= r) = 0.90 for e ~ N(0, Sigma) in 2-D, exact for elliptical
covariances (not the circular shortcut). With sigma1 >= sigma2 the eigen-axis standard deviations,
ce90 = sigma1 * g(sigma2 / sigma1); g is tabulated at import on a 0.02 grid (about 6 ms) by
solving P(r) = 0.9 with Newton's method, where

    P(r) = integral_{-pi/2}^{pi/2} phi(r sin th) erf(r cos th / (sqrt2 k)) r cos th d th

(sigma1 = 1, k = sigma2; obtained from z1 = r sin th in the conditional form of P). The integrand is
smooth and periodic, so the trapezoid rule converges exponentially; the table is accurate to
1e-10 and the 4-point interpolation between nodes to better than 1e-6 relative. Limits: k = 1 gives
2.1460 sigma (circular), k = 0 gives 1.6449 sigma1 (all error on one axis).

Defaults (``DEFAULT_SIGMAS``), for a small drone or mast camera without survey-grade sensors:
- position 5 m per horizontal axis: standalone GNSS without corrections is typically 2-5 m 1-sigma
  per axis in the open, worse near structures; we take the pessimistic end.
- altitude 2 m: barometric height relative to the take-off point drifts by about a metre, and the
  ground under the target is rarely exactly level with the assumed ground plane.
- heading 2 deg: magnetometer-referenced yaw after a field calibration is good to 1-3 deg.
- pitch and roll 1 deg: gravity-referenced, so better than heading; gimbal IMUs hold 0.5-1 deg.
- pixel 2 px: the jitter of a detector's box centre / bottom edge between frames.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from detection_api.geo.camera import RayPartials
from detection_api.geo.ellipsoid import Real
from detection_api.geo.types import ConfidenceFlag, InputSigmas, sigma_values

CE90_PER_SIGMA_CIRCULAR = 2.1460  # CoT ce = ce90 / 2.1460 (contract constant)
LE90_PER_SIGMA = 1.6449  # CoT le = le90 / 1.6449 (contract constant)
PROBABILITY = 0.90

DEFAULT_SIGMAS = InputSigmas(
    position_m=5.0, altitude_m=2.0, heading_deg=2.0, pitch_deg=1.0, roll_deg=1.0, pixel=2.0
)

# Order of the Jacobian columns; units: m, m, m, deg, deg, deg, px, px.
INPUT_NAMES: tuple[str, ...] = (
    "camera_east_m",
    "camera_north_m",
    "camera_height_m",
    "heading_deg",
    "pitch_deg",
    "roll_deg",
    "pixel_x",
    "pixel_y",
)

EnColumn = tuple[float, float]  # (d east, d north) of the hit per unit of one input


def hit_en_jacobian(
    ray_enu: tuple[Real, Real, Real],
    ray_partials: RayPartials,
    ray_parameter: Real,
    *,
    tan_camera_lat: Real,
    prime_vertical_plus_height_m: Real,
    meridian_plus_height_m: Real,
    hit_frame_in_camera_enu: tuple[tuple[Real, Real, Real], ...],
) -> tuple[tuple[Real, Real], ...]:
    """East/North offsets of the hit per unit error of each input, in ``INPUT_NAMES`` order.

    Every vector is in the camera's ENU components; ``ray_parameter`` is t in X = C + t d for the
    unnormalised ``ray_enu`` d; the radii are N + h and M + h at the camera. Plain arithmetic:
    geo/locate_batch.py passes numpy arrays.
    """
    de, dn, du = ray_enu
    hit_east, hit_north, hit_up = hit_frame_in_camera_enu
    # dX = w + dt d with w = dC + t dd and dt = -(n . w) / (n . d), so the hit's East offset is
    # (east - (east . d)/(n . d) n) . w, and likewise North: two fixed projection vectors.
    ray_up = hit_up[0] * de + hit_up[1] * dn + hit_up[2] * du
    east_slide = (hit_east[0] * de + hit_east[1] * dn + hit_east[2] * du) / ray_up
    north_slide = (hit_north[0] * de + hit_north[1] * dn + hit_north[2] * du) / ray_up
    pe = (
        hit_east[0] - east_slide * hit_up[0],
        hit_east[1] - east_slide * hit_up[1],
        hit_east[2] - east_slide * hit_up[2],
    )
    pn = (
        hit_north[0] - north_slide * hit_up[0],
        hit_north[1] - north_slide * hit_up[1],
        hit_north[2] - north_slide * hit_up[2],
    )
    camera_terms = (tan_camera_lat, prime_vertical_plus_height_m, meridian_plus_height_m)
    directions = input_directions(ray_enu, ray_partials, ray_parameter, camera_terms)
    # The projections written out (not a function called per input): a quarter of this step.
    pe0, pe1, pe2 = pe
    pn0, pn1, pn2 = pn
    return tuple(
        [
            (
                scale * (pe0 * w[0] + pe1 * w[1] + pe2 * w[2]),
                scale * (pn0 * w[0] + pn1 * w[1] + pn2 * w[2]),
            )
            for w, scale in directions
        ]
    )


def input_directions(
    ray_enu: tuple[Real, Real, Real],
    ray_partials: RayPartials,
    ray_parameter: Real,
    camera_terms: tuple[Real, Real, Real],
) -> tuple[tuple[tuple[Real, Real, Real], Real], ...]:
    """(w, scale) per input in ``INPUT_NAMES`` order, ``camera_terms`` being (tan lat, N + h,
    M + h) at the camera: a unit error of the input moves the point
    C + t d (before it slides along the ray back onto the ground) by scale * w, in camera ENU.

    Camera offsets move C along its own E/N/U and also turn its ENU frame, which carries the ray;
    attitude and pixel errors turn the ray (``camera.ray_partials_enu``, per degree here).
    """
    de, dn, du = ray_enu
    t = ray_parameter
    tan_lat, prime_vertical_plus_height_m, meridian_plus_height_m = camera_terms
    t_n = t / prime_vertical_plus_height_m
    t_m = t / meridian_plus_height_m
    t_deg = t * math.pi / 180.0
    return (
        ((1.0 + (du - tan_lat * dn) * t_n, tan_lat * de * t_n, -de * t_n), 1.0),  # camera east
        ((0.0, 1.0 + du * t_m, -dn * t_m), 1.0),  # camera north
        ((0.0, 0.0, 1.0), 1.0),  # camera height
        (ray_partials.heading, t_deg),
        (ray_partials.pitch, t_deg),
        (ray_partials.roll, t_deg),
        (ray_partials.pixel_x, t),
        (ray_partials.pixel_y, t),
    )


def input_sigma_vector(sigmas: InputSigmas) -> tuple[float, ...]:
    """The eight 1-sigma values in ``INPUT_NAMES`` order."""
    position, altitude, heading, pitch, roll, pixel = sigma_values(sigmas)
    return (position, position, altitude, heading, pitch, roll, pixel, pixel)


def horizontal_covariance_en(
    jacobian: tuple[EnColumn, ...], sigmas: InputSigmas
) -> tuple[float, float, float]:
    """J diag(sigma^2) J^T as (var_east, cov_east_north, var_north) in m^2."""
    return covariance_en(jacobian, input_sigma_vector(sigmas))


def covariance_en(
    jacobian: tuple[tuple[Real, Real], ...], sigma_vector: tuple[Real, ...]
) -> tuple[Real, Real, Real]:
    """``horizontal_covariance_en`` for the 1-sigma values given in ``INPUT_NAMES`` order (plain
    arithmetic: geo/locate_batch.py passes numpy arrays)."""
    var_e = cov_en = var_n = 0.0
    for (je, jn), sigma in zip(jacobian, sigma_vector, strict=True):
        s2 = sigma * sigma
        var_e = var_e + s2 * je * je
        cov_en = cov_en + s2 * je * jn
        var_n = var_n + s2 * jn * jn
    return var_e, cov_en, var_n  # type: ignore[return-value] # Real after the first input


def principal_sigmas(var_e: float, cov_en: float, var_n: float) -> tuple[float, float]:
    """Standard deviations along the covariance ellipse's major and minor axes."""
    mean = 0.5 * (var_e + var_n)
    spread = math.hypot(0.5 * (var_e - var_n), cov_en)
    return math.sqrt(max(mean + spread, 0.0)), math.sqrt(max(mean - spread, 0.0))


def probability_within_radius(radius: float, sigma_major: float, sigma_minor: float) -> float:
    """P(|e| <= radius) for a 2-D normal with these principal standard deviations."""
    if sigma_major <= 0.0:
        return 1.0
    if sigma_minor <= 0.0:
        return math.erf(radius / (math.sqrt(2.0) * sigma_major))
    ratio = sigma_minor / sigma_major
    probability, _ = _probability_and_density(radius / sigma_major, ratio, _quarter_nodes(ratio))
    return probability


def ce90_m(var_e: float, cov_en: float, var_n: float) -> float:
    """Exact 90% circular error radius of a 2-D normal with this East/North covariance."""
    sigma_major, sigma_minor = principal_sigmas(var_e, cov_en, var_n)
    if sigma_major <= 0.0:
        return 0.0
    return sigma_major * _ce90_per_major_sigma(sigma_minor / sigma_major)


def le90_m(sigmas: InputSigmas) -> float:
    return LE90_PER_SIGMA * sigmas.altitude_m


def confidence_flag(ce90: float, green_max_m: float, yellow_max_m: float) -> ConfidenceFlag:
    if ce90 <= green_max_m:
        return ConfidenceFlag.GREEN
    if ce90 <= yellow_max_m:
        return ConfidenceFlag.YELLOW
    return ConfidenceFlag.RED


# --- the ce90 / sigma_major table -------------------------------------------------------------

_TABLE_STEPS_PER_UNIT = 50  # axis ratio grid 0, 0.02, ..., 1.02 (one node past 1 for the stencil)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _quarter_nodes(ratio: float) -> int:
    # the integrands vary over ~ratio/2 radians near th = pi/2: ~8 nodes across that already give
    # round-off accuracy (checked against 4x the nodes in tests/test_geo_uncertainty.py)
    return 16 + math.ceil(8.0 / ratio)


def _probability_and_density(
    radius: float, ratio: float, quarter_nodes: int
) -> tuple[float, float]:
    """P(r) and dP/dr for principal sigmas (1, ratio), periodic trapezoid rule in th.

    P(r)    = r   int phi(r sin th) erf(r cos th / (sqrt2 k)) cos th        d th
    dP/dr   = r/k sqrt(2/pi) int phi(r sin th) exp(-r^2 cos^2 th / (2 k^2)) d th
    both over [-pi/2, pi/2]; the integrands are even about 0 and pi/2, so a quarter period suffices.
    """
    scale = radius / (math.sqrt(2.0) * ratio)
    step = 0.5 * math.pi / quarter_nodes
    p_sum = d_sum = 0.0
    for j in range(quarter_nodes + 1):
        theta = j * step
        cos_t = math.cos(theta)
        weight = 0.5 if j in (0, quarter_nodes) else 1.0
        sin_t = math.sin(theta)
        normal_pdf = _INV_SQRT_2PI * math.exp(-0.5 * (radius * sin_t) ** 2)
        p_sum += weight * normal_pdf * math.erf(scale * cos_t) * cos_t
        d_sum += weight * normal_pdf * math.exp(-((scale * cos_t) ** 2))
    half_period = math.pi / quarter_nodes  # (integral over [-pi/2, pi/2]) = half_period * sum
    probability = radius * half_period * p_sum
    density = radius / ratio * math.sqrt(2.0 / math.pi) * half_period * d_sum
    return probability, density


def _solve_ce90_per_major_sigma(ratio: float, guess: float) -> float:
    if ratio == 0.0:
        return NormalDist().inv_cdf(0.5 + PROBABILITY / 2.0)
    nodes = _quarter_nodes(ratio)
    radius = guess
    for _ in range(50):
        probability, density = _probability_and_density(radius, ratio, nodes)
        step = (probability - PROBABILITY) / density
        radius -= step
        if abs(step) < 1e-13:
            return radius
    raise ArithmeticError(f"ce90 table did not converge for axis ratio {ratio}")  # pragma: no cover


def _build_table() -> tuple[float, ...]:
    values: list[float] = []
    guess = 1.7
    for i in range(_TABLE_STEPS_PER_UNIT + 2):
        value = _solve_ce90_per_major_sigma(i / _TABLE_STEPS_PER_UNIT, guess)
        values.append(value)
        guess = value + 0.02  # continuation: g grows slowly with the axis ratio
    return tuple(values)


_CE90_PER_MAJOR_SIGMA_TABLE = _build_table()


def ce90_per_major_sigma_table() -> tuple[int, tuple[float, ...]]:
    """(nodes per unit of axis ratio, ce90 / sigma_major at each node): for array twins."""
    return _TABLE_STEPS_PER_UNIT, _CE90_PER_MAJOR_SIGMA_TABLE


def _ce90_per_major_sigma(ratio: float) -> float:
    """ce90 / sigma_major for sigma_minor / sigma_major = ratio in [0, 1], 4-point Lagrange."""
    table = _CE90_PER_MAJOR_SIGMA_TABLE
    x = ratio * _TABLE_STEPS_PER_UNIT
    i = min(int(x), _TABLE_STEPS_PER_UNIT - 1)
    t = x - i
    # g is even in the ratio (only its square enters), so node -1 mirrors node 1
    return lagrange4(t, table[abs(i - 1)], table[i], table[i + 1], table[i + 2])


def lagrange4(t: Real, g_before: Real, g0: Real, g1: Real, g2: Real) -> Real:
    """Cubic Lagrange interpolation at t in [0, 1) through nodes -1, 0, 1, 2 (plain arithmetic:
    geo/locate_batch.py passes numpy arrays)."""
    return (
        -t * (t - 1.0) * (t - 2.0) / 6.0 * g_before
        + (t + 1.0) * (t - 1.0) * (t - 2.0) / 2.0 * g0
        - (t + 1.0) * t * (t - 2.0) / 2.0 * g1
        + (t + 1.0) * t * (t - 1.0) / 6.0 * g2
    )
