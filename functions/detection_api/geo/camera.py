"""Camera orientation: the optical axes in local East-North-Up and the ray through a pixel.

Conventions (README "The detection payload"): camera frame x right, y down, z forward. For
heading h (clockwise from true north), pitch p (up positive) and roll r (positive turns the
image's right side down), in ENU at the camera:

    forward      F  = (sin h cos p, cos h cos p, sin p)
    level right  R0 = (cos h, -sin h, 0)                 the image's right at zero roll
    level down   D0 = F x R0 = (sin p sin h, sin p cos h, -cos p)
    right        R  =  cos r R0 + sin r D0               roll turns right towards down
    down         D  = -sin r R0 + cos r D0

so R x D = F (a right-handed x, y, z) and at pitch 0, roll 0 down is (0, 0, -1). The (unnormalised)
ray through pixel (u, v) is F + ((u - cx)/f) R + ((v - cy)/f) D.

``ray_partials_enu`` gives the derivatives of that ray with respect to heading, pitch, roll
(per radian) and the two pixel coordinates (per pixel), which the uncertainty propagation needs:

    dF/dh = cos p R0     dR0/dh = (-sin h, -cos h, 0)     dD0/dh = sin p R0
    dF/dp = -D0          dR0/dp = 0                       dD0/dp = F
    dR/dr = D            dD/dr = -R
"""

from __future__ import annotations

import math
from typing import NamedTuple

from detection_api.geo.ellipsoid import Real, Vec3


class CameraAxes(NamedTuple):
    """The camera's axes in local ENU, plus the trigonometry the derivatives reuse."""

    forward: Vec3
    right: Vec3
    down: Vec3
    level_right: Vec3  # right at zero roll (horizontal)
    level_down: Vec3  # down at zero roll
    sin_heading: float
    cos_heading: float
    sin_pitch: float
    cos_pitch: float
    sin_roll: float
    cos_roll: float


class RayPartials(NamedTuple):
    """Derivatives of the unnormalised ENU ray: per radian of attitude, per pixel of image."""

    heading: Vec3
    pitch: Vec3
    roll: Vec3
    pixel_x: Vec3
    pixel_y: Vec3


def camera_axes(heading_rad: float, pitch_rad: float, roll_rad: float) -> CameraAxes:
    sh, ch = math.sin(heading_rad), math.cos(heading_rad)
    sp, cp = math.sin(pitch_rad), math.cos(pitch_rad)
    sr, cr = math.sin(roll_rad), math.cos(roll_rad)
    forward, right, down, level_right, level_down = axes_from_trig((sh, ch), (sp, cp), (sr, cr))
    return CameraAxes(forward, right, down, level_right, level_down, sh, ch, sp, cp, sr, cr)


def axes_from_trig(
    heading: tuple[Real, Real], pitch: tuple[Real, Real], roll: tuple[Real, Real]
) -> tuple[tuple[Real, Real, Real], ...]:
    """(forward, right, down, level right, level down) from the (sine, cosine) of heading,
    pitch and roll. Plain arithmetic: geo/locate_batch.py passes numpy arrays."""
    (sh, ch), (sp, cp), (sr, cr) = heading, pitch, roll
    level_right = (ch, -sh, 0.0)
    level_down = (sp * sh, sp * ch, -cp)
    forward = (sh * cp, ch * cp, sp)
    right = (
        cr * level_right[0] + sr * level_down[0],
        cr * level_right[1] + sr * level_down[1],
        sr * level_down[2],
    )
    down = (
        -sr * level_right[0] + cr * level_down[0],
        -sr * level_right[1] + cr * level_down[1],
        cr * level_down[2],
    )
    return forward, right, down, level_right, level_down


def image_plane_offsets(
    pixel_x: float, pixel_y: float, focal_px: float, cx_px: float, cy_px: float
) -> tuple[float, float]:
    """Pixel -> (right, down) offsets of the ray on the image plane at unit forward distance."""
    return (pixel_x - cx_px) / focal_px, (pixel_y - cy_px) / focal_px


def ray_enu(axes: CameraAxes, right_offset: float, down_offset: float) -> Vec3:
    """Unnormalised ray F + a R + b D in ENU at the camera."""
    f, r, d = axes.forward, axes.right, axes.down
    return (
        f[0] + right_offset * r[0] + down_offset * d[0],
        f[1] + right_offset * r[1] + down_offset * d[1],
        f[2] + right_offset * r[2] + down_offset * d[2],
    )


def ray_partials_enu(
    axes: CameraAxes, right_offset: float, down_offset: float, focal_px: float
) -> RayPartials:
    a, b = right_offset, down_offset
    f, r, d = axes.forward, axes.right, axes.down
    r0, d0 = axes.level_right, axes.level_down
    sp, cp, sr, cr = axes.sin_pitch, axes.cos_pitch, axes.sin_roll, axes.cos_roll
    d_r0_d_heading = (-axes.sin_heading, -axes.cos_heading, 0.0)
    # d/dh of F + a R + b D with R = cr R0 + sr D0, D = -sr R0 + cr D0 and dD0/dh = sp R0
    coef_r0_turn = a * cr - b * sr  # multiplies dR0/dh
    coef_r0 = cp + sp * (a * sr + b * cr)  # multiplies R0 (from dF/dh and dD0/dh)
    heading = (
        coef_r0 * r0[0] + coef_r0_turn * d_r0_d_heading[0],
        coef_r0 * r0[1] + coef_r0_turn * d_r0_d_heading[1],
        0.0,
    )
    # d/dp: dF/dp = -D0, dR/dp = sr F, dD/dp = cr F
    coef_f = a * sr + b * cr
    pitch = (coef_f * f[0] - d0[0], coef_f * f[1] - d0[1], coef_f * f[2] - d0[2])
    roll = (a * d[0] - b * r[0], a * d[1] - b * r[1], a * d[2] - b * r[2])
    inv_f = 1.0 / focal_px
    return RayPartials(
        heading=heading,
        pitch=pitch,
        roll=roll,
        pixel_x=(r[0] * inv_f, r[1] * inv_f, r[2] * inv_f),
        pixel_y=(d[0] * inv_f, d[1] * inv_f, d[2] * inv_f),
    )
