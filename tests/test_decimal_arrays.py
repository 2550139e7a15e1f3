"""``round_many`` gives exactly Python's ``round(x, digits)``, and ``significant_many`` exactly
``float("%.6g" % x)``, value by value, over arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detection_api.decimal_arrays import round_many, significant_many


def _same(values: list[float], digits: int) -> None:
    got = round_many(np.array(values, dtype=np.float64), digits)
    want = [round(v, digits) for v in values]
    # compared as bit patterns: equal doubles, the sign of zero and NaN included
    assert [v.hex() for v in got] == [v.hex() for v in want]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50),
    st.sampled_from([0, 1, 3, 6, 9, 12]),
)
def test_any_doubles(values: list[float], digits: int) -> None:
    _same(values, digits)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=-180, max_value=180), min_size=1, max_size=50),
    st.lists(st.floats(min_value=0, max_value=50_000), min_size=1, max_size=50),
)
def test_degrees_and_metres(degrees: list[float], metres: list[float]) -> None:
    """The ranges the geolocations have: latitudes and longitudes to 1e-9, metres to 1 mm."""
    _same(degrees, 9)
    _same(metres, 3)


@pytest.mark.parametrize("digits", [3, 9])
def test_values_next_to_a_half(digits: int) -> None:
    """Where the product lands on or beside a half, only the exact value decides: the doubles
    nearest n + 0.5 (scaled down) and their neighbours round either way."""
    values = []
    for n in [0, 1, 2, 7, 12_345, 47_123_456_789, 179_999_999_999]:
        middle = (n + 0.5) / 10**digits
        for v in (middle, -middle):
            values += [math.nextafter(v, -math.inf), v, math.nextafter(v, math.inf)]
    _same(values, digits)


def test_exact_ties_go_to_even() -> None:
    _same([0.5, 1.5, 2.5, -0.5, 0.125, 0.375, 2.0**-4], 0)
    _same([0.0625, 0.1875, -0.0625], 3)


def test_shape_is_flattened_in_order() -> None:
    values = np.array([[1.23456, 2.34567], [3.45678, 4.56789]])
    assert round_many(values, 2) == [1.23, 2.35, 3.46, 4.57]


def test_digits_outside_the_exact_powers_are_refused() -> None:
    with pytest.raises(ValueError):
        round_many(np.array([1.0]), 23)


def _same_significant(values: list[float], digits: int = 6) -> None:
    got = significant_many(np.array(values, dtype=np.float64), digits)
    want = [float(f"%.{digits}g" % v) for v in values]
    assert [v.hex() for v in got] == [v.hex() for v in want]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50),
    st.sampled_from([1, 3, 6, 9, 15]),
)
def test_significant_any_doubles(values: list[float], digits: int) -> None:
    _same_significant(values, digits)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=-1e7, max_value=1e7), min_size=1, max_size=50))
def test_significant_variances(values: list[float]) -> None:
    """The range of the geolocations' covariance entries (m², either sign off the diagonal)."""
    _same_significant(values)


def test_significant_next_to_powers_of_ten_and_halves() -> None:
    """Where log10's place could be off by one, and where the scaled value lands by a half."""
    values = []
    for exponent in range(-17, 8):
        for v in (10.0**exponent, 10.0**exponent * 9.999995, 1.234565 * 10.0**exponent):
            for w in (v, -v):
                values += [w]
                below, above = w, w
                for _ in range(40):  # log10 misplaces some of the doubles just below a power
                    below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
                    values += [below, above]
    values += [0.0, -0.0, 999_999.5, 99_999.95, 0.1, 1e-17, 1e-18, 2.5e-5]
    for digits in (3, 6, 15):
        _same_significant(values, digits)


def test_significant_digits_outside_the_exact_range_are_refused() -> None:
    with pytest.raises(ValueError):
        significant_many(np.array([1.0]), 16)
