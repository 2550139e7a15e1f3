"""Python's ``round(x, digits)`` over a numpy array, for the JSON answers of a list of detections.

``round`` is correctly rounded: it rounds the exact binary value of ``x`` half to even at the
decimal place and returns the double nearest that decimal, through two decimal conversions of
about 0.4 us each. Over an array the same doubles come from one multiplication, ``rint`` and a
division (both operands exact, so the division is correctly rounded too), except where the
product lies too close to a half for its rounding error to be ruled out: those few values, and
any that are not finite or too large, go to ``round`` itself.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Below 2**52 every double's nearest integer is exact, and so is the quotient's numerator.
_EXACT_INTEGERS = 2.0**52
# The product's rounding error is at most half an ulp, |product| * 2**-53; twice that is kept.
_RELATIVE_MARGIN = 2.0**-52


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
