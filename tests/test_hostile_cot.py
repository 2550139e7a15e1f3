"""XML-hostile text in every text field, through the whole core (model -> geometry -> CoT).

Whatever text the model lets through (class and source are nearly free text; the detection id can
be any CloudEvents id), the CoT event stays one valid XML 1.0 document of the documented shape:
strict parsers read it, no raw ``&`` reaches a TAK parser (taky silently drops the rest of a
connection after one), no element can be injected, required attributes stay, and every value
reads back as sent minus only the characters XML cannot carry.
"""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from detection_api.core import CoreConfig, process_detection
from detection_api.cot import DETAIL_ELEMENT, label_safe, xml_safe
from detection_api.model import parse_detection
from test_cot import RAW_AMPERSAND, assert_valid_cot

EXAMPLE = json.loads(
    (Path(__file__).resolve().parent.parent / "examples" / "detection.json").read_text()
)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
XML_HOSTILE = [
    "&",
    "&amp;",
    "&#0;",
    "&e;",
    "<",
    ">",
    '"',
    "'",
    "]]>",
    "<![CDATA[",
    "<!--",
    "-->",
    "<?xml version='1.0'?>",
    "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
    '"/><injected a="',
    "</detail></event><event>",
    "\ufffe\uffff",
    "\U0001f697",
    "\u202e",
    "\x85",
    "\t",
]
EVENT_ATTRIBUTES = {"version", "uid", "type", "time", "start", "stale", "how"}
POINT_ATTRIBUTES = {"lat", "lon", "hae", "ce", "le"}
ELEMENTS = {"event", "point", "detail", "contact", "remarks", "link", DETAIL_ELEMENT}

hostile_text = st.one_of(
    st.sampled_from(XML_HOSTILE),
    st.lists(st.sampled_from(XML_HOSTILE), min_size=2, max_size=6).map("x".join),
    # any code point but lone surrogates (refused earlier: see test_hostile_model)
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60),
)


def cot_for(object_class: str, source: str, detection_id: str) -> str | None:
    data: dict[str, Any] = copy.deepcopy(EXAMPLE)
    data.update(object_class=object_class, source=source, track_id="7")
    try:
        det = parse_detection(data, now=NOW)
    except ValidationError:
        return None  # e.g. control characters, blank or over-long class: a 400 before any XML
    return process_detection(
        det, CoreConfig(), record_id="0123abcd", detection_id=detection_id, now=NOW
    ).cot_xml


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(object_class=hostile_text, source=hostile_text, detection_id=hostile_text)
@example(object_class="car & <b>", source='"/><x a="', detection_id="</event>")
@example(object_class="]]>", source="&amp;", detection_id="&#0;")
def test_hostile_text_in_every_field_gives_a_valid_escaped_event(
    object_class: str, source: str, detection_id: str
) -> None:
    xml = cot_for(object_class, source, detection_id)
    if xml is None:
        return
    assert RAW_AMPERSAND.search(xml) is None, xml
    root = assert_valid_cot(xml)  # strict lxml parse + CoT schema subset
    assert ET.fromstring(xml) is not None  # the standard library parser agrees
    # Nothing injected, nothing lost.
    tags = [element.tag for element in root.iter()]
    assert set(tags) <= ELEMENTS and len(tags) == len(set(tags)), tags
    assert set(root.attrib) >= EVENT_ATTRIBUTES
    assert set(root.find("point").attrib) >= POINT_ATTRIBUTES
    assert root.get("how") == "m-i"
    # Every value reads back as sent, minus only what XML 1.0 cannot carry.
    mine = root.find(f"detail/{DETAIL_ELEMENT}")
    assert mine.get("class") == xml_safe(object_class.strip())
    assert mine.get("source") == xml_safe(source)
    assert mine.get("id") == xml_safe(detection_id)
    assert root.find("detail/link").get("uid") == EXAMPLE["camera_id"]
    assert root.find("detail/remarks").text.startswith(label_safe(object_class.strip()))


def test_every_hostile_string_is_accepted_as_a_class_and_round_trips() -> None:
    # Class and source accept all of these (none is a C0 control), so each one reaches the XML.
    for text in XML_HOSTILE:
        if text == "\t":
            continue  # a C0 control: the model refuses it
        xml = cot_for(f"a{text}b", f"s{text}", f"d{text}")
        assert xml is not None, text
        mine = assert_valid_cot(xml).find(f"detail/{DETAIL_ELEMENT}")
        assert mine.get("class") == xml_safe(f"a{text}b")
        assert mine.get("source") == xml_safe(f"s{text}")
        assert mine.get("id") == xml_safe(f"d{text}")
