"""First-order error of a hit on sloped terrain: the eight camera inputs plus the DEM's own error.

Same method as geo/uncertainty.py (read it first), with the ground plane replaced by the terrain
surface up . X = H(east, north) at the hit. With G = (dH/dEast, dH/dNorth) the local slope, the
surface's (unnormalised) normal is n = up - G_e east - G_n north, and a perturbation dX = w + dt d
of the hit must satisfy n . dX = delta, the change of the surface height there. So

    dt = (delta - n . w) / (n . d),   dX = w - (n . w)/(n . d) d + delta/(n . d) d.

The DEM error model (drawn the same way by the Monte-Carlo test):
- ``dem_vertical_m``: a vertical offset of the surface, 1-sigma ``DEM_SIGMA_M``;
- ``dem_shift_east_m`` / ``dem_shift_north_m``: a horizontal shift of the surface, 1-sigma
  spacing / sqrt(12) per axis: a post stands for its whole cell, and where in the cell the height
  truly belongs is uniform over it (for a 1" DEM 8.9 m north-south, close to SRTM's stated
  horizontal accuracy). A shift s changes the height under a fixed point by -G . s.
So delta = dv - G . s, which is how the slope enters: on steep ground, and where the ray meets it at
a grazing angle (n . d small), the same DEM error moves the hit farther. Vertical: the hit's height
error is up . dX, from the same columns (le90 = 1.6449 sigma_up).
"""

from __future__ import annotations

import math

from detection_api.geo.camera import RayPartials
from detection_api.geo.ellipsoid import EnuFrame, Vec3, dot
from detection_api.geo.types import InputSigmas
from detection_api.geo.uncertainty import covariance_en, input_directions, input_sigma_vector

# Columns after uncertainty.INPUT_NAMES, all in metres.
DEM_INPUT_NAMES: tuple[str, ...] = ("dem_vertical_m", "dem_shift_east_m", "dem_shift_north_m")

EnuColumn = tuple[float, float, float]  # (d east, d north, d up) of the hit per unit of one input


def shift_sigma_m(post_spacing_m: float) -> float:
    """1-sigma of a uniform position within a cell of this size."""
    return post_spacing_m / math.sqrt(12.0)


def hit_enu_jacobian_on_slope(
    ray_enu: Vec3,
    ray_partials: RayPartials,
    ray_parameter: float,
    *,
    camera_lat_rad: float,
    prime_vertical_plus_height_m: float,
    meridian_plus_height_m: float,
    hit_frame_in_camera_enu: EnuFrame,
    slope_east: float,
    slope_north: float,
) -> tuple[EnuColumn, ...]:
    """Columns for uncertainty.INPUT_NAMES then DEM_INPUT_NAMES (everything in camera ENU)."""
    east, north, up = hit_frame_in_camera_enu
    normal = (
        up[0] - slope_east * east[0] - slope_north * north[0],
        up[1] - slope_east * east[1] - slope_north * north[1],
        up[2] - slope_east * east[2] - slope_north * north[2],
    )
    inv_normal_dot_ray = 1.0 / dot(normal, ray_enu)
    along_e = dot(east, ray_enu) * inv_normal_dot_ray
    along_n = dot(north, ray_enu) * inv_normal_dot_ray
    along_u = dot(up, ray_enu) * inv_normal_dot_ray
    # dX components per unit w: axis . w - along * (normal . w), for axis = east, north, up
    ex, ey, ez = east
    nx, ny, nz = north
    ux, uy, uz = up
    mx, my, mz = normal
    pe = (ex - along_e * mx, ey - along_e * my, ez - along_e * mz)
    pn = (nx - along_n * mx, ny - along_n * my, nz - along_n * mz)
    pu = (ux - along_u * mx, uy - along_u * my, uz - along_u * mz)

    directions = input_directions(
        ray_enu,
        ray_partials,
        ray_parameter,
        (math.tan(camera_lat_rad), prime_vertical_plus_height_m, meridian_plus_height_m),
    )
    columns: list[EnuColumn] = [
        (
            scale * (pe[0] * w[0] + pe[1] * w[1] + pe[2] * w[2]),
            scale * (pn[0] * w[0] + pn[1] * w[1] + pn[2] * w[2]),
            scale * (pu[0] * w[0] + pu[1] * w[1] + pu[2] * w[2]),
        )
        for w, scale in directions
    ]
    columns.append((along_e, along_n, along_u))
    columns.append((-slope_east * along_e, -slope_east * along_n, -slope_east * along_u))
    columns.append((-slope_north * along_e, -slope_north * along_n, -slope_north * along_u))
    return tuple(columns)


def covariance_on_slope(
    jacobian: tuple[EnuColumn, ...],
    sigmas: InputSigmas,
    dem_sigma_m: float,
    shift_sigma_east_m: float,
    shift_sigma_north_m: float,
) -> tuple[tuple[float, float, float], float]:
    """((var_east, cov_east_north, var_north), var_up) in m^2."""
    all_sigmas = (*input_sigma_vector(sigmas), dem_sigma_m, shift_sigma_east_m, shift_sigma_north_m)
    covariance = covariance_en([(je, jn) for je, jn, _ in jacobian], all_sigmas)
    var_u = 0.0
    for (_, _, ju), sigma in zip(jacobian, all_sigmas, strict=True):
        var_u += sigma * sigma * ju * ju
    return covariance, var_u
