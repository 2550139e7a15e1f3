"""The CoT type of a detection's object class: the default table, ``COT_TYPE_MAP`` merged over
it, and the check that a type is one (README "Cursor-on-Target").

CoT type by object class (unknown affiliation ``a-u`` until a human confirms; classes are matched
case-insensitively, with ``_``/``-``/runs of spaces treated as one space). ``COT_TYPE_MAP`` (a JSON
object) is merged over this table. Anything unmapped is ``a-u-G`` (ground track).

=============================================  ==================  ==========================
object class                                   CoT type            MIL-STD-2525 / CoT meaning
=============================================  ==================  ==========================
person, people, pedestrian, human              a-u-G               ground track
vehicle, car, truck, van, pickup, suv          a-u-G-E-V           ground vehicle
motorcycle, bicycle                            a-u-G-E-V           ground vehicle
bus                                            a-u-G-E-V-U-B       utility vehicle / bus
tank, armored vehicle                          a-u-G-E-V-A-T       armoured vehicle / tank
train, locomotive                              a-u-G-E-V-T         locomotive
aircraft, airplane, plane, helicopter          a-u-A               air track
drone, uav                                     a-u-A               air track
boat, ship, vessel                             a-u-S               sea surface track
building                                       a-u-G-I             building
weapon                                         a-u-G-E-W           ground weapon
=============================================  ==================  ==========================
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from types import MappingProxyType

UNMAPPED_TYPE = "a-u-G"
_VEHICLE = "a-u-G-E-V"
_AIR = "a-u-A"
_SEA = "a-u-S"
DEFAULT_TYPE_MAP: Mapping[str, str] = MappingProxyType(
    {
        "person": UNMAPPED_TYPE,
        "people": UNMAPPED_TYPE,
        "pedestrian": UNMAPPED_TYPE,
        "human": UNMAPPED_TYPE,
        "vehicle": _VEHICLE,
        "car": _VEHICLE,
        "truck": _VEHICLE,
        "van": _VEHICLE,
        "pickup": _VEHICLE,
        "suv": _VEHICLE,
        "motorcycle": _VEHICLE,
        "bicycle": _VEHICLE,
        "bus": "a-u-G-E-V-U-B",
        "tank": "a-u-G-E-V-A-T",
        "armored vehicle": "a-u-G-E-V-A-T",
        "train": "a-u-G-E-V-T",
        "locomotive": "a-u-G-E-V-T",
        "aircraft": _AIR,
        "airplane": _AIR,
        "plane": _AIR,
        "helicopter": _AIR,
        "drone": _AIR,
        "uav": _AIR,
        "boat": _SEA,
        "ship": _SEA,
        "vessel": _SEA,
        "building": "a-u-G-I",
        "weapon": "a-u-G-E-W",
    }
)

# CoT 2.0 base schema pattern for `type` (without the optional ";..." component we never emit).
_COT_TYPE = re.compile(r"^\w+(-\w+)*$", re.ASCII)
_CLASS_SEPARATORS = re.compile(r"[\s_-]+")


def is_cot_type(text: str) -> bool:
    return _COT_TYPE.match(text) is not None


@functools.lru_cache(maxsize=4096)  # a site sees a few dozen classes, in every request
def normalise_class(object_class: str) -> str:
    """The map key of a class: case-folded, ``_``/``-``/whitespace runs as one space."""
    return _CLASS_SEPARATORS.sub(" ", object_class).strip().casefold()


def parse_type_map(text: str, base: Mapping[str, str] = DEFAULT_TYPE_MAP) -> dict[str, str]:
    """``COT_TYPE_MAP`` (a JSON object ``{"class": "type"}``) merged over ``base``.

    Raises ValueError naming the bad entry, so a misconfiguration stops the process at start.
    """
    merged = dict(base)
    if not text.strip():
        return merged
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"COT_TYPE_MAP is not valid JSON: {exc.msg}") from None
    if not isinstance(overrides, dict):
        raise ValueError('COT_TYPE_MAP must be a JSON object {"object class": "CoT type"}')
    for object_class, cot_type in overrides.items():
        if not isinstance(cot_type, str) or not is_cot_type(cot_type):
            raise ValueError(
                f"COT_TYPE_MAP[{object_class!r}] = {cot_type!r} is not a CoT type like a-u-G-E-V"
            )
        key = normalise_class(object_class)
        if not key:
            raise ValueError("COT_TYPE_MAP has an empty object class")
        merged[key] = cot_type
    return merged


def cot_type_for(object_class: str, type_map: Mapping[str, str] = DEFAULT_TYPE_MAP) -> str:
    return type_map.get(normalise_class(object_class), UNMAPPED_TYPE)
