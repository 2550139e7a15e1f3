"""CoT types by object class: the default table, the COT_TYPE_MAP override, the type check."""

from __future__ import annotations

import re

import pytest

from detection_api.cot_types import (
    DEFAULT_TYPE_MAP,
    UNMAPPED_TYPE,
    cot_type_for,
    is_cot_type,
    normalise_class,
    parse_type_map,
)


@pytest.mark.parametrize(
    ("object_class", "expected"),
    [
        ("person", "a-u-G"),
        ("Vehicle", "a-u-G-E-V"),
        ("CAR", "a-u-G-E-V"),
        ("truck", "a-u-G-E-V"),
        ("bus", "a-u-G-E-V-U-B"),
        ("drone", "a-u-A"),
        ("airplane", "a-u-A"),
        ("boat", "a-u-S"),
        ("Armored_Vehicle", "a-u-G-E-V-A-T"),
        ("armored  -vehicle", "a-u-G-E-V-A-T"),
        ("giraffe", UNMAPPED_TYPE),
    ],
)
def test_class_to_type(object_class: str, expected: str) -> None:
    assert cot_type_for(object_class) == expected


def test_default_types_are_unknown_affiliation_atoms() -> None:
    for cot_type in DEFAULT_TYPE_MAP.values():
        assert re.fullmatch(r"a-u-[A-Z](-[A-Za-z]+)*", cot_type)
    assert UNMAPPED_TYPE == "a-u-G"


def test_type_map_override_is_merged_over_the_default() -> None:
    merged = parse_type_map('{"Car": "a-u-G-E-V-C", "Forklift": "a-u-G-E-V-U"}')
    assert cot_type_for("car", merged) == "a-u-G-E-V-C"
    assert cot_type_for("FORKLIFT", merged) == "a-u-G-E-V-U"
    assert cot_type_for("person", merged) == "a-u-G"  # default kept
    assert parse_type_map("") == dict(DEFAULT_TYPE_MAP)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["car"]', "JSON object"),
        ('{"car": 5}', "not a CoT type"),
        ('{"car": "a-u-G <x>"}', "not a CoT type"),
        ('{" ": "a-u-G"}', "empty object class"),
    ],
)
def test_bad_type_map_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_type_map(text)


def test_normalise_class() -> None:
    assert normalise_class("  Pickup_Truck ") == "pickup truck"
    assert normalise_class("pickup-truck") == "pickup truck"


@pytest.mark.parametrize("cot_type", ["a-u-G", "a-u-G-E-V", "t-x-c-t", "b-m-p-s-p-i"])
def test_cot_types_are_recognised(cot_type: str) -> None:
    assert is_cot_type(cot_type)


@pytest.mark.parametrize("text", ["", "a-u-G <x>", "a--G", "-a", "a-u-G;x", "a-ü-G"])
def test_other_text_is_not_a_cot_type(text: str) -> None:
    assert not is_cot_type(text)
