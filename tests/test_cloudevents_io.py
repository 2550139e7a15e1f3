"""CloudEvents parsing: binary, structured, batch, and every malformed shape answers a Problem."""

from __future__ import annotations

import json

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from detection_api.app import cloudevents_io as ce
from detection_api.app.problems import Problem

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
