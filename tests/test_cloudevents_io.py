"""CloudEvents parsing: binary, structured, batch, and every malformed shape answers a Problem."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detection_api.app import cloudevents_io as ce
from detection_api.app.problems import Problem
from test_model import json_values, odd_text

DATA = {"object_class": "vehicle"}


def _event(**attrs: str) -> CloudEvent:
    base = {"type": "org.detectionapi.detection.created", "source": "/drone/7", "id": "e-1"}
    base.update(attrs)
    return CloudEvent(base, DATA)


def test_binary_mode_is_parsed_with_its_attributes() -> None:
    headers, body = to_binary(_event())
    mode, events = ce.parse_request(headers, body)
    assert mode == "binary"
    assert events[0].event_id == "e-1"
    assert events[0].source == "/drone/7"
    assert events[0].data == DATA


def test_structured_mode_is_parsed() -> None:
    headers, body = to_structured(_event(subject="cam-1"))
    mode, events = ce.parse_request(headers, body)
    assert mode == "structured"
    assert events[0].subject == "cam-1"
    assert events[0].data == DATA


def test_batch_mode_keeps_order() -> None:
    items = [json.loads(to_structured(_event(id=f"e-{i}"))[1]) for i in range(3)]
    mode, events = ce.parse_request(
        {"Content-Type": ce.BATCH_MEDIA_TYPE}, json.dumps(items).encode()
    )
    assert mode == "batch"
    assert [e.event_id for e in events] == ["e-0", "e-1", "e-2"]


def _problem(headers: dict[str, str], body: bytes) -> Problem:
    with pytest.raises(Problem) as info:
        ce.parse_request(headers, body)
    return info.value


def test_binary_without_id_is_rejected_not_given_a_default_id() -> None:
    headers, body = to_binary(_event())
    del headers["ce-id"]
    problem = _problem(headers, body)
    assert problem.status == 400
    assert problem.errors == [
        {"path": "ce-id", "message": "required CloudEvents attribute is missing"}
    ]


def test_wrong_specversion_is_rejected() -> None:
    headers, body = to_binary(_event())
    headers["ce-specversion"] = "0.3"
    problem = _problem(headers, body)
    assert problem.status == 400
    assert problem.errors[0]["path"] == "ce-specversion"


def test_binary_with_non_json_content_type_is_415() -> None:
    headers, _ = to_binary(_event())
    headers["content-type"] = "text/plain"
    assert _problem(headers, b"hello").status == 415


def test_binary_with_broken_json_is_400() -> None:
    headers, _ = to_binary(_event())
    assert _problem(headers, b"{not json").status == 400


def test_plain_json_without_ce_headers_is_415_with_a_pointer_to_rest() -> None:
    problem = _problem({"Content-Type": "application/json"}, b"{}")
    assert problem.status == 415
    assert "/api/v1/detections" in (problem.detail or "")


def test_structured_missing_source_names_the_attribute() -> None:
    raw = json.loads(to_structured(_event())[1])
    del raw["source"]
    problem = _problem({"Content-Type": ce.STRUCTURED_MEDIA_TYPE}, json.dumps(raw).encode())
    assert problem.errors[0]["path"] == "source"


def test_structured_base64_data_is_415() -> None:
    raw = json.loads(to_structured(_event())[1])
    raw.pop("data")
    raw["data_base64"] = "AAAA"
    problem = _problem({"Content-Type": ce.STRUCTURED_MEDIA_TYPE}, json.dumps(raw).encode())
    assert problem.status == 415


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{}", 400), (b"[]", 400), (b"[1, 2]", 400), (b"not json", 400), (b"[" * 100_000, 400)],
)
def test_bad_batches_are_400(body: bytes, status: int) -> None:
    assert _problem({"Content-Type": ce.BATCH_MEDIA_TYPE}, body).status == status


def test_batch_item_errors_carry_the_index() -> None:
    good = json.loads(to_structured(_event())[1])
    bad = dict(good)
    del bad["type"]
    problem = _problem({"Content-Type": ce.BATCH_MEDIA_TYPE}, json.dumps([good, bad]).encode())
    assert problem.errors[0]["path"] == "[1].type"


def test_reply_has_a_different_type_so_a_broker_cannot_loop_it() -> None:
    reply = ce.reply_event({"id": "r"}, event_id="r", subject="d-1")
    headers, body = ce.binary_reply(reply)
    assert headers["ce-type"] == "org.detectionapi.detection.geolocated"
    assert headers["ce-id"] == "r"
    assert json.loads(body) == {"id": "r"}
    batch = json.loads(ce.batch_reply([reply, reply]))
    assert [item["type"] for item in batch] == ["org.detectionapi.detection.geolocated"] * 2


def test_a_batch_reply_holds_each_event_as_its_structured_mode_writes_it() -> None:
    replies = [
        ce.reply_event(
            {"id": f"r{i}", "geolocation": {"lat": 51.2, "flag": "GREEN"}, "cot": "<event/>"},
            event_id=f"r{i}",
            subject=subject,
        )
        for i, subject in enumerate(["d-1", None, "caméra/7 ✓"])
    ]
    body = ce.batch_reply(replies)
    assert json.loads(body) == [json.loads(to_structured(reply)[1]) for reply in replies]
    # Read back as the events they are.
    mode, events = ce.parse_request({"Content-Type": ce.BATCH_MEDIA_TYPE}, body)
    assert mode == "batch"
    assert [(e.event_id, e.subject) for e in events] == [
        ("r0", "d-1"),
        ("r1", None),
        ("r2", "caméra/7 ✓"),
    ]


# -- bounds and the HTTP binding's percent-encoding (issue 10) ------------------------------------


@pytest.mark.parametrize(("name", "limit"), [("id", 256), ("type", 256), ("source", 512)])
def test_every_attribute_is_bounded(name: str, limit: int) -> None:
    headers, body = to_structured(_event(**{name: "x" * limit}))
    ce.parse_request(headers, body)  # at the limit: accepted
    headers, body = to_structured(_event(**{name: "x" * (limit + 1)}))
    problem = _problem(headers, body)
    assert problem.status == 400 and problem.errors[0]["path"] == name
    headers, body = to_binary(_event(**{name: "x" * (limit + 1)}))
    assert _problem(headers, body).errors[0]["path"] == f"ce-{name}"


def test_extension_attributes_are_bounded_in_number_and_length() -> None:
    headers, body = to_structured(_event(**{f"ext{i}": "v" for i in range(40)}))
    assert _problem(headers, body).status == 400
    headers, body = to_binary(_event(myext="v" * 257))
    assert _problem(headers, body).errors[0]["path"] == "ce-myext"


def test_binary_headers_are_percent_decoded() -> None:
    headers, body = to_binary(_event())
    headers = {**headers, "ce-id": "caf%C3%A9%20%25", "ce-source": "/n%C3%B8rth"}
    _, events = ce.parse_request(headers, body)
    assert events[0].event_id == "café %" and events[0].source == "/nørth"


@pytest.mark.parametrize("value", ["%FF", "%C3", "a%0Ab"])
def test_bad_percent_encoding_and_encoded_controls_are_400(value: str) -> None:
    headers, body = to_binary(_event())
    problem = _problem({**headers, "ce-id": value}, body)
    assert problem.status == 400 and problem.errors[0]["path"] == "ce-id"


def test_dead_letters_keep_knatives_error_attributes_and_any_data() -> None:
    headers, _ = to_binary(_event())
    headers = {
        **headers,
        "ce-knativeerrorcode": "500",
        "ce-knativeerrordest": "http://detection-api.ns.svc/",
        "ce-knativeerrordata": "x" * 4000,
        "content-type": "text/plain",
    }
    letter = ce.parse_dead_letter(headers, b"not json \xff")
    assert letter.attributes["knativeerrorcode"] == "500"
    assert letter.attributes["knativeerrordata"] == "x" * 4000
    assert letter.data == "not json \ufffd"
    _, body = to_structured(_event())
    structured = ce.parse_dead_letter({"Content-Type": ce.STRUCTURED_MEDIA_TYPE}, body)
    assert structured.attributes["id"] == "e-1" and json.loads(structured.data) == DATA
    with pytest.raises(Problem) as info:
        ce.parse_dead_letter({"Content-Type": "application/json"}, b"{}")
    assert info.value.status == 415


def test_ce_headers_with_a_cloudevents_media_type_are_415_not_500() -> None:
    headers, _ = to_binary(_event(id="0" * 256))
    for media in (ce.STRUCTURED_MEDIA_TYPE, ce.BATCH_MEDIA_TYPE):
        assert _problem({**headers, "content-type": media}, b"[null, null]").status == 415


# --- hostile input (formerly test_hostile_cloudevents.py) -----------------------------------------
# Malformed and hostile CloudEvents and JSON bodies, in process: only 4xx ``Problem``s come out.
#
# Covers every required attribute missing in each mode, wrong specversion, bad batches, binary mode
# with the wrong content type, structured events with ``data_base64``, deep nesting, invalid UTF-8,
# lone surrogates, control characters in attributes, odd header values, and the reply headers that
# carry a producer's id back (percent-encoded, so any Unicode is safe in them).


CREATED = "org.detectionapi.detection.created"
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STRUCTURED = {"Content-Type": ce.STRUCTURED_MEDIA_TYPE}
BATCH = {"Content-Type": ce.BATCH_MEDIA_TYPE}


def structured_event(**changes: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": "e-1", "source": "/drone/7", "type": CREATED, "data": DATA}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


def binary_headers(**changes: str | None) -> dict[str, str]:
    headers, _ = to_binary(CloudEvent({"type": CREATED, "source": "/drone/7", "id": "e-1"}, DATA))
    headers = dict(headers)
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return headers


def refused(headers: dict[str, str], body: bytes, status: int = 400) -> Problem:
    with pytest.raises(Problem) as info:
        ce.parse_request(headers, body)
    problem = info.value
    assert problem.status == status, problem.body()
    json.dumps(problem.body()).encode("utf-8")  # the answer itself serialises
    return problem


def paths(problem: Problem) -> list[str]:
    return [error.get("path", "") for error in problem.errors]


# --- missing, wrong and malformed attributes ------------------------------------------------------


@pytest.mark.parametrize("name", ce.REQUIRED_ATTRIBUTES)
def test_each_missing_attribute_is_named_in_every_mode(name: str) -> None:
    body = json.dumps(DATA).encode()
    assert paths(refused(binary_headers(**{f"ce_{name}": None}), body)) == [f"ce-{name}"]
    event = structured_event(**{name: None})
    assert paths(refused(STRUCTURED, json.dumps(event).encode())) == [name]
    batch = [structured_event(), event]
    assert paths(refused(BATCH, json.dumps(batch).encode())) == [f"[1].{name}"]


@pytest.mark.parametrize("value", ["", 1, 1.0, None, [], {}, True])
def test_attributes_that_are_not_text_count_as_missing(value: Any) -> None:
    event = structured_event()
    event["id"] = value
    assert paths(refused(STRUCTURED, json.dumps(event).encode())) == ["id"]


@pytest.mark.parametrize("version", ["0.3", "1", "1.0 ", "2.0", "1.0\x00"])
def test_wrong_specversion_is_refused_in_every_mode(version: str) -> None:
    body = json.dumps(DATA).encode()
    refused(binary_headers(ce_specversion=version), body)
    refused(STRUCTURED, json.dumps(structured_event(specversion=version)).encode())
    refused(BATCH, json.dumps([structured_event(specversion=version)]).encode())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", "a\nb"),  # would reach the ce-subject header of the reply
        ("id", "a\r\nX-Injected: 1"),
        ("id", "nul\x00"),
        ("source", "/drone\x7f"),
        ("type", CREATED + "\x85"),  # a C1 control
        ("id", "\ufdd0"),  # a noncharacter
        ("subject", "\U0010ffff"),  # a noncharacter in the last plane
        ("id", "\ud800"),  # a lone surrogate (as a JSON escape)
    ],
)
def test_attribute_values_must_be_cloudevents_strings(name: str, value: str) -> None:
    problem = refused(STRUCTURED, json.dumps(structured_event(**{name: value})).encode())
    assert paths(problem) in ([name], []), problem.body()


@pytest.mark.parametrize("value", ["a\x01b", "tab\tinside", "del\x7f"])
def test_binary_header_values_with_control_characters_are_refused(value: str) -> None:
    problem = refused(binary_headers(ce_id=value), json.dumps(DATA).encode())
    assert paths(problem) == ["ce-id"]


def test_binary_header_values_in_latin_1_are_accepted() -> None:
    # WSGI hands raw header bytes over as latin-1 text: UTF-8 "é" arrives as "Ã©", not a control.
    mode, events = ce.parse_request(binary_headers(ce_id="caf\xc3\xa9"), json.dumps(DATA).encode())
    assert mode == "binary"
    assert events[0].event_id == "caf\xc3\xa9"


# --- bodies: batches, media types, encodings, nesting ------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b"[]",
        b"null",
        b'"a string"',
        b"[1, 2]",
        b"[[]]",
        b"[null]",
        json.dumps({"events": [structured_event()]}).encode(),
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_bad_batches_are_refused(body: bytes) -> None:
    refused(BATCH, body)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
    ],
)
def test_binary_mode_with_a_non_json_content_type_is_415(content_type: str) -> None:
    refused(binary_headers(content_type=content_type), b"vehicle", 415)


@pytest.mark.parametrize(
    "changes",
    [
        {"data": None, "data_base64": "eyJvYmplY3RfY2xhc3MiOiAiY2FyIn0="},
        {"datacontenttype": "text/plain", "data": "vehicle"},
        {"datacontenttype": "application/xml", "data": "<x/>"},
    ],
)
def test_structured_data_must_be_json(changes: dict[str, Any]) -> None:
    refused(STRUCTURED, json.dumps(structured_event(**changes)).encode(), 415)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{}",  # not UTF-8
        b'{"object_class": "\xed\xa0\x80"}',  # UTF-8-encoded surrogate: invalid UTF-8
        b'{"object_class": "\\ud800"}',  # lone surrogate escape
        b'{"\\udfff": 1}',  # ... in a key
        b'{"a": [{"b": "x\\ud83d"}]}',  # ... deep inside, an unfinished pair
        b"{" * 50_000,
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the recursion guard
        b'{"a": 1} trailing',
        b"1" * 5_000,  # more digits than Python converts
    ],
)
def test_hostile_json_bodies_are_400_in_every_mode(body: bytes) -> None:
    for headers in (binary_headers(), STRUCTURED, BATCH):
        refused(headers, body)
    with pytest.raises(Problem):
        ce.load_json(body)


def test_non_finite_literals_reach_the_model_for_a_field_path() -> None:
    # Python's JSON reader accepts NaN/Infinity; they are left to the model, whose error then
    # names the field (sensor_metadata.pitch) instead of "not JSON".
    assert ce.load_json(b'{"pitch": NaN}') == {"pitch": pytest.approx(float("nan"), nan_ok=True)}


def test_valid_unicode_survives_json_loading() -> None:
    assert ce.load_json(b'"\\ud83d\\ude97"') == "\U0001f697"  # a proper surrogate pair
    assert ce.load_json('"\U0001f697"'.encode()) == "\U0001f697"
    assert ce.load_json(b'"\\\\ud800"') == "\\ud800"  # an escaped backslash, not an escape
    assert ce.load_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a UTF-8 byte order mark


def test_empty_binary_body_is_an_event_without_data() -> None:
    _, events = ce.parse_request(binary_headers(), b"")
    assert events[0].data is None  # ingest then answers "a detection must be a JSON object"


# --- fuzz ----------------------------------------------------------------------------------------

attribute_values = st.one_of(odd_text, json_values)
events = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.one_of(st.just("1.0"), attribute_values),
        "id": st.one_of(st.just("e-1"), attribute_values),
        "source": st.one_of(st.just("/s"), attribute_values),
        "type": st.one_of(st.just(CREATED), attribute_values),
        "datacontenttype": st.one_of(st.just("application/json"), attribute_values),
        "data": json_values,
        "data_base64": attribute_values,
        "subject": attribute_values,
        "time": attribute_values,
    },
)


def assert_clean(events: list[ce.IncomingEvent]) -> None:
    for event in events:
        for text in (event.event_id, event.source, event.type):
            assert isinstance(text, str) and text
            text.encode("utf-8")
            assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


@FUZZ
@given(event=events, batch=st.booleans())
@example(event=structured_event(id="\ud800"), batch=True)
@example(event=structured_event(data={"k": "\udc00"}), batch=False)
def test_any_structured_or_batch_body_is_parsed_or_a_problem(
    event: dict[str, Any], batch: bool
) -> None:
    body = json.dumps([event] if batch else event).encode()
    try:
        _, parsed = ce.parse_request(BATCH if batch else STRUCTURED, body)
    except Problem as problem:
        assert 400 <= problem.status < 500
        return
    assert_clean(parsed)


header_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=30)


@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(
            [
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-time",
                "ce-subject",
                "ce-dataschema",
                "ce-x",
                "content-type",
            ]
        ),
        header_text,
    ),
    body=st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode())),
)
def test_any_binary_request_is_parsed_or_a_problem(headers: dict[str, str], body: bytes) -> None:
    headers.setdefault("ce-id", "e-1")  # binary mode
    try:
        _, parsed = ce.parse_request(headers, body)
    except Problem as problem:
        assert 400 <= problem.status < 500
        return
    assert_clean(parsed)


@FUZZ
@given(body=st.binary(max_size=200))
def test_any_bytes_are_json_or_a_problem(body: bytes) -> None:
    try:
        value = ce.load_json(body)
    except Problem as problem:
        assert problem.status == 400
        return
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # no lone surrogate got through


def _standard_reading(body: bytes) -> Any:
    """What load_json gave before its orjson fast path: json.loads, lone surrogates refused."""
    value = json.loads(body.decode("utf-8-sig"))
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value


def _same_reading(body: bytes) -> None:
    try:
        expected = _standard_reading(body)
    except (ValueError, RecursionError):
        with pytest.raises(Problem):
            ce.load_json(body)
        return
    got = ce.load_json(body)
    # repr tells 1 from 1.0 and -0.0 from 0.0, and keeps NaN comparable
    assert repr(got) == repr(expected)


@pytest.mark.parametrize(
    "body",
    [
        b"18446744073709551616",  # past 64 bits: orjson would read a float
        b"-9223372036854775809",
        b'{"detection_id": 123456789012345678901234567890}',
        b"[1.0000000000000000001, 12345678901234567890e-5]",
        b"9223372036854775807",  # 19 digits: the standard reading, and exact either way
        b'\xef\xbb\xbf{"a": [1, 2.5, null]}',  # byte order mark
        b'{"pitch": NaN, "roll": -Infinity}',
        b"1e400",
        b'"\\udc00"',
        b'{"\\ud800": 1}',
        b'"\\ud83d\\ude97"',
        b"-0",
        b"-0.0",
        b"5e-324",
        b'{"a": 1, "a": 2}',
        b'"\\u0000"',
        b'"\xc0\x80"',
        b"[" * 2000 + b"]" * 2000,
    ],
)
def test_the_fast_reading_is_the_standard_one(body: bytes) -> None:
    _same_reading(body)


@FUZZ
@given(value=json_values, ascii=st.booleans())
def test_any_document_reads_as_the_standard_library_reads_it(value: Any, ascii: bool) -> None:
    try:
        body = json.dumps(value, ensure_ascii=ascii).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    _same_reading(body)


# --- replies --------------------------------------------------------------------------------------


@FUZZ
@given(subject=st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1))
@example(subject="a\nb")
@example(subject='100% "quoted"')
@example(subject="\U0001f697 é")
def test_reply_headers_are_percent_encoded_printable_ascii(subject: str) -> None:
    reply = ce.reply_event({"id": "r"}, event_id="0123abcd", subject=subject)
    headers, _ = ce.binary_reply(reply)
    for name, value in headers.items():
        if name.startswith("ce-"):
            assert all(0x21 <= ord(c) <= 0x7E and c != '"' for c in value), (name, value)
    assert unquote(headers["ce-subject"], errors="strict") == subject
    assert headers["ce-type"] == "org.detectionapi.detection.geolocated"


def test_structured_round_trip_of_the_sdk_still_parses() -> None:
    event = CloudEvent({"type": CREATED, "source": "/s", "id": "e-9", "subject": "é"}, DATA)
    headers, body = to_structured(event)
    _, parsed = ce.parse_request(dict(headers), body)
    assert parsed[0].event_id == "e-9"
    assert parsed[0].subject == "é"
