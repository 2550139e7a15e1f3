"""Python's ``round(x, digits)``, and rounding to significant digits, over a numpy array, for the
JSON answers of a list of detections.

``round`` is correctly rounded: it rounds the exact binary value of ``x`` half to even at the
decimal place and returns the double nearest that decimal, through two decimal conversions of
about 0.4 us each. Over an array the same doubles come from one multiplication, ``rint`` and a
division (both operands exact, so the division is correctly rounded too), except where the
product lies too close to a half for its rounding error to be ruled out: those few values, and
any that are not finite or too large, go to ``round`` itself.

``float("%.6g" % x)`` is the same rounding at the decimal place of x's sixth significant digit:
``significant_many`` finds that place from ``log10`` and keeps it only where the scaled value
proves it (it lies inside [10**5, 10**6) with room for the product's rounding error).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Below 2**52 every double's nearest integer is exact, and so is the quotient's numerator.
_EXACT_INTEGERS = 2.0**52
# The product's rounding error is at most half an ulp, |product| * 2**-53; twice that is kept.
_RELATIVE_MARGIN = 2.0**-52
_MAX_EXACT_DIGITS = 22  # 10**22 is the largest power of ten a double holds exactly
# from exact integers, not numpy's pow: each power is the double it must be by construction
_POWERS_OF_TEN = np.array([float(10**k) for k in range(_MAX_EXACT_DIGITS + 1)])


def round_many(values: npt.NDArray[np.float64], digits: int) -> list[float]:
    """``[round(v, digits) for v in values.ravel()]`` for ``0 <= digits <= 22`` (where
    ``10**digits`` is an exact double), the same doubles in the same order."""
    if not 0 <= digits <= 22:
        raise ValueError("digits must be 0..22")
    flat = np.asarray(values, dtype=np.float64).ravel()
    scale = 10.0**digits
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN go to round() below
        scaled = flat * scale
        nearest = np.rint(scaled)  # half to even, like the decimal rounding
        distance_to_half = np.abs(np.abs(scaled - nearest) - 0.5)
        sure = (np.abs(scaled) < _EXACT_INTEGERS) & (
            distance_to_half > np.abs(scaled) * _RELATIVE_MARGIN
        )
    out: list[float] = (nearest / scale).tolist()
    for i in np.flatnonzero(~sure).tolist():
        out[i] = round(float(flat[i]), digits)
    return out


def significant_many(values: npt.NDArray[np.float64], digits: int) -> list[float]:
    """``[float(f"%.{digits}g" % v) for v in values.ravel()]`` for ``1 <= digits <= 15``, the
    same doubles in the same order. Values whose decimal place is not an exact power of ten (at
    or above ``10**digits``, below about 1e-17), zeros, and the unsure ones are formatted."""
    if not 1 <= digits <= 15:
        raise ValueError("digits must be 1..15")
    flat = np.asarray(values, dtype=np.float64).ravel()
    low, high = 10.0 ** (digits - 1), 10.0**digits
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        decimals = (digits - 1) - np.floor(np.log10(np.abs(flat)))  # inf for 0, NaN for NaN
        usable = (decimals >= 0) & (decimals <= _MAX_EXACT_DIGITS)  # (False for inf and NaN)
        scale = _POWERS_OF_TEN[np.where(usable, decimals, 0).astype(np.int64)]
        scaled = flat * scale
        magnitude = np.abs(scaled)
        # the place is right when the scaled value has `digits` digits before the point
        in_place = (magnitude >= low * (1 + _RELATIVE_MARGIN)) & (
            magnitude < high * (1 - _RELATIVE_MARGIN)
        )
        nearest = np.rint(scaled)
        distance_to_half = np.abs(np.abs(scaled - nearest) - 0.5)
        sure = usable & in_place & (distance_to_half > magnitude * _RELATIVE_MARGIN)
    out: list[float] = (nearest / scale).tolist()
    template = f"%.{digits}g"
    for i in np.flatnonzero(~sure).tolist():
        out[i] = float(template % flat[i])
    return out
