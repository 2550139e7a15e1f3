"""Hostile HTTP input against the running function (functions-framework, real Redis).

Every malformed or hostile request gets a 4xx ``application/problem+json`` answer, never a 5xx or
a stack trace, and leaves nothing behind: no delivery job, no record. Covered: malformed
CloudEvents (each required attribute missing, wrong specversion, bad batches, binary mode with a
non-JSON content type, structured ``data_base64``), oversized bodies (with and without a
Content-Length), deep JSON, invalid UTF-8, lone surrogates, control characters in attributes, odd
header values, XML-hostile strings in every text field (the CoT stays valid and escaped), and a
bounded hypothesis run of generated bodies in all four ingest modes.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest
from cloudevents.conversion import to_binary
from http_client import Reply, post_json, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from product import function_argv
from test_function_http import assert_problem, detection, event

from detection_api.cot import DETAIL_ELEMENT, xml_safe
from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok
from test_cot import RAW_AMPERSAND
from test_model import FIELD_PATHS, json_values, with_value

CREATED = "org.detectionapi.detection.created"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REST = "/api/v1/detections"
MAX_BODY = 16_384
MAX_IMAGE = 4_096


@pytest.fixture
def function_url(redis_server, start_process) -> str:
    port = free_port()
    start_process(
        f"function-{port}",
        function_argv(port),
        env={
            "REDIS_URL": redis_server.url,
            "AUTH_DISABLED": "true",
            "RATE_LIMIT": "100000/second",  # the fuzz below must not be throttled
            "MAX_BODY_BYTES": str(MAX_BODY),
            "MAX_IMAGE_BYTES": str(MAX_IMAGE),
        },
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
    )
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def stored(redis_server) -> Callable[[], tuple[int, int, int]]:
    """What a request can leave behind: (delivery jobs queued, records, rq job hashes)."""
    client = redis_server.client()

    def count() -> tuple[int, int, int]:
        return (
            client.llen("rq:queue:tak"),
            len(client.keys("detection:record:*")),
            len(client.keys("rq:job:*")),
        )

    return count


def binary_headers(**changes: str | None) -> dict[str, str]:
    headers = dict(to_binary(event(detection()))[0])
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return headers


def structured(data: Any = None, **changes: Any) -> dict[str, Any]:
    item = {
        "specversion": "1.0",
        "id": "ev-1",
        "source": "/test/drone",
        "type": CREATED,
        "datacontenttype": "application/json",
        "data": detection() if data is None else data,
    }
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


def body_of(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


S = {"Content-Type": STRUCTURED}
B = {"Content-Type": BATCH}
J = {"Content-Type": "application/json"}
EXAMPLE_BODY = body_of(detection())
ATTRIBUTES = ("specversion", "id", "source", "type")

# (name, path, headers, body, status)
MALFORMED: list[tuple[str, str, dict[str, str], Any, int]] = [
    *[
        (f"binary without {a}", "/", binary_headers(**{f"ce_{a}": None}), EXAMPLE_BODY, 400)
        for a in ATTRIBUTES
    ],
    *[(f"structured without {a}", "/", S, structured(**{a: None}), 400) for a in ATTRIBUTES],
    *[
        (f"batch item without {a}", "/", B, [structured(), structured(**{a: None})], 400)
        for a in ATTRIBUTES
    ],
    ("binary specversion 0.3", "/", binary_headers(ce_specversion="0.3"), EXAMPLE_BODY, 400),
    ("structured specversion 2.0", "/", S, structured(specversion="2.0"), 400),
    ("batch not a list", "/", B, structured(), 400),
    ("batch empty", "/", B, [], 400),
    ("batch of numbers", "/", B, [1, 2], 400),
    ("batch of lists", "/", B, [[structured()]], 400),
    ("batch with null", "/", B, [structured(), None], 400),
    ("binary text/plain", "/", binary_headers(content_type="text/plain"), b"vehicle", 415),
    ("binary xml", "/", binary_headers(content_type="application/xml"), b"<d/>", 415),
    ("binary form", "/", binary_headers(content_type="multipart/form-data"), b"a=1", 415),
    ("plain json to /", "/", J, detection(), 415),
    ("no content type to /", "/", {}, detection(), 415),
    ("structured data_base64", "/", S, structured(data_base64="e30=", data=None), 415),
    ("structured text data", "/", S, structured(datacontenttype="text/plain", data="car"), 415),
    ("unaccepted type", "/", S, structured(type="com.example.other"), 400),
    ("id with newline", "/", S, structured(id="a\nb"), 400),
    ("id with CRLF header", "/", S, structured(id="a\r\nX-Injected: 1"), 400),
    ("source with NUL", "/", S, structured(source="/s\x00"), 400),
    ("type with C1 control", "/", S, structured(type=CREATED + "\x85"), 400),
    ("id lone surrogate", "/", S, structured(id="\ud800"), 400),
    ("data lone surrogate", "/", binary_headers(), detection(object_class="\udc00car"), 400),
    ("batch lone surrogate", "/", B, [structured(data=detection(detection_id="\ud800"))], 400),
    ("binary ce-id tab", "/", binary_headers(ce_id="a\tb"), EXAMPLE_BODY, 400),
    ("binary invalid UTF-8", "/", binary_headers(), b'{"object_class": "\xff\xfe"}', 400),
    ("structured invalid UTF-8", "/", S, b"\xc3\x28", 400),
    ("batch UTF-8 surrogate bytes", "/", B, b'["\xed\xa0\x80"]', 400),
    ("REST invalid UTF-8", REST, J, b"\xff{}", 400),
    ("binary deep JSON", "/", binary_headers(), deep(8_000), 400),
    ("structured deep JSON", "/", S, deep(8_000), 400),
    ("batch deep JSON", "/", B, deep(8_000), 400),
    ("REST deep JSON", REST, J, deep(8_000), 400),
    ("binary NaN", "/", binary_headers(), EXAMPLE_BODY.replace(b"0.91", b"NaN"), 400),
    ("REST Infinity", REST, J, EXAMPLE_BODY.replace(b"0.91", b"Infinity"), 400),
    ("REST huge integer", REST, J, EXAMPLE_BODY.replace(b"0.91", b"9" * 5000), 400),
    ("REST number as text", REST, J, detection(ai_confidence="0.91"), 400),
    ("REST wrong media type", REST, {"Content-Type": "text/csv"}, b"a,b", 415),
    ("binary data is a string", "/", binary_headers(), "a detection", 400),
    ("binary data is a list", "/", binary_headers(), [detection()], 400),
    ("binary data empty", "/", binary_headers(), b"", 400),
    ("above the horizon", "/", binary_headers(), detection(sensor_metadata={"pitch": 20.0}), 422),
    ("camera 1 um up", REST, J, detection(sensor_metadata={"location_elevation": 1e-6}), 400),
    ("focal 1e-300 px", REST, J, detection(sensor_metadata={"focal_length": 1e-300}), 400),
]


def test_malformed_requests_are_problems_and_store_nothing(function_url, stored):
    # One server for the whole table; every failure is reported, not only the first.
    failures = []
    for name, path, headers, payload, status in MALFORMED:
        reply = request(function_url, "POST", path, body_of(payload), headers)
        try:
            problem = assert_problem(reply, status)
            assert stored() == (0, 0, 0), name
            assert problem["instance"] == path
        except AssertionError as exc:
            failures.append(f"{name}: {reply.status} {reply.body[:200]!r} ({exc})")
    assert not failures, "\n".join(failures)


def test_field_paths_survive_non_finite_literals(function_url):
    body = body_of(detection()).replace(b"-35.0", b"NaN")  # sensor_metadata.pitch
    problem = assert_problem(request(function_url, "POST", "/", body, binary_headers()), 400)
    assert [e["path"] for e in problem["errors"]] == ["sensor_metadata.pitch"]


# --- size limits --------------------------------------------------------------------------------


def _chunked_post(base_url: str, path: str, headers: dict[str, str], chunks: list[bytes]) -> Reply:
    """POST with Transfer-Encoding: chunked (no Content-Length to check up front)."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        connection.request("POST", path, body=iter(chunks), headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        connection.close()


def test_oversized_bodies_are_413_in_every_mode_and_store_nothing(function_url, stored):
    big = detection(source="s" * 200, image_base64="A" * (MAX_BODY + 1))
    batch = [structured(id=f"b-{i}") for i in range(MAX_BODY // 500)]
    cases = [
        (REST, {"Content-Type": "application/json"}, body_of(big)),
        ("/", binary_headers(), body_of(big)),
        ("/", {"Content-Type": STRUCTURED}, body_of(structured(data=big))),
        ("/", {"Content-Type": BATCH}, body_of(batch)),
    ]
    for path, headers, body in cases:
        assert len(body) > MAX_BODY
        problem = assert_problem(request(function_url, "POST", path, body, headers), 413)
        assert str(MAX_BODY) in problem["detail"]
    assert stored() == (0, 0, 0)


def test_oversized_chunked_bodies_are_413(function_url, stored):
    body = body_of(detection(image_base64="A" * (MAX_BODY + 1)))
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    reply = _chunked_post(function_url, REST, {"Content-Type": "application/json"}, chunks)
    assert stored() == (0, 0, 0)
    assert_problem(reply, 413)


def test_chunked_bodies_within_the_limit_are_served(function_url):
    body = body_of(detection())
    chunks = [body[i : i + 100] for i in range(0, len(body), 100)]
    reply = _chunked_post(function_url, REST, {"Content-Type": "application/json"}, chunks)
    assert reply.status == 201, reply.body


def test_images_over_the_image_cap_are_refused_within_the_body_limit(function_url, stored):
    # 9 kB decoded: within MAX_BODY_BYTES, over MAX_IMAGE_BYTES (refused before decoding).
    reply = post_json(function_url, REST, detection(image_base64="A" * 12_000))
    problem = assert_problem(reply, 400)
    assert [e["path"] for e in problem["errors"]] == ["image_base64"]
    assert stored() == (0, 0, 0)
    reply = post_json(function_url, REST, detection(image_base64="A" * 4_000))
    assert reply.status == 201, reply.body


# --- odd but valid: served, and safely -----------------------------------------------------------


def test_unicode_event_ids_are_served_and_percent_encoded_in_reply_headers(function_url):
    reply = request(
        function_url,
        "POST",
        "/",
        body_of(structured(id="caf\u00e9-\U0001f697 100%")),
        {"Content-Type": STRUCTURED},
    )
    assert reply.status == 200, reply.body
    subject = reply.header("ce-subject")
    assert subject.isascii() and " " not in subject
    assert unquote(subject) == "caf\u00e9-\U0001f697 100%"
    # Raw UTF-8 in a binary-mode header arrives as latin-1 text: accepted as an opaque id.
    raw = binary_headers(ce_id="caf\u00c3\u00a9")
    reply = request(function_url, "POST", "/", body_of(detection()), raw)
    assert reply.status == 200, reply.body


def test_header_values_the_server_refuses_are_never_5xx(function_url, stored):
    for value in ("a\x00b", "a\x7fb", "x" * 10_000):
        reply = request(
            function_url, "POST", "/", body_of(detection()), binary_headers(ce_id=value)
        )
        # gunicorn's own 400 (HTML) for a NUL, a DEL or an over-long header line: not ours, not 5xx
        assert 400 <= reply.status < 500, reply.body
        assert b"Traceback" not in reply.body
    assert stored() == (0, 0, 0)


# --- XML-hostile text in every text field ---------------------------------------------------------

HOSTILE = "&amp; & <b>\"q\" 'a'</b> ]]> <!-- <![CDATA[ \u202e \U0001f697 \ufffe"
# CloudEvents ids refuse noncharacters (the String type of the spec); everything else goes.
HOSTILE_ID = HOSTILE.replace("\ufffe", "")


def _assert_escaped_cot(cot: str, *, object_class: str, source: str, detection_id: str) -> None:
    assert RAW_AMPERSAND.search(cot) is None, cot
    root = etree.fromstring(cot.encode())
    assert {e.tag for e in root.iter()} <= {
        "event",
        "point",
        "detail",
        "contact",
        "remarks",
        "link",
        DETAIL_ELEMENT,
    }
    mine = root.find(f"detail/{DETAIL_ELEMENT}")
    assert mine.get("class") == xml_safe(object_class)
    assert mine.get("source") == xml_safe(source)
    assert mine.get("id") == xml_safe(detection_id)
    assert root.find("point").get("lat") and root.get("uid") and root.get("how") == "m-i"


def test_xml_hostile_strings_in_every_text_field_give_valid_cot(function_url):
    hostile = detection(
        object_class=HOSTILE[:64], source=HOSTILE, camera_id="cam:1.a_b-c", track_id="t-&"
    )
    # track_id refuses '&' (ids are [A-Za-z0-9_.:-]); everything else is free text.
    assert_problem(post_json(function_url, REST, hostile), 400)
    hostile["track_id"] = "t:7"
    reply = post_json(function_url, REST, hostile)
    assert reply.status == 201, reply.body
    cot = reply.body.decode()
    record = request(function_url, "GET", reply.header("location")).json
    assert record["cot"] == cot
    detection_id = record["detection_id"]
    _assert_escaped_cot(cot, object_class=HOSTILE[:64], source=HOSTILE, detection_id=detection_id)
    # A CloudEvent id is free text too, and becomes the detection id.
    ce_reply = request(
        function_url,
        "POST",
        "/",
        body_of(structured(data=hostile, id=HOSTILE_ID)),
        {"Content-Type": STRUCTURED},
    )
    assert ce_reply.status == 200, ce_reply.body
    _assert_escaped_cot(
        ce_reply.json["cot"], object_class=HOSTILE[:64], source=HOSTILE, detection_id=HOSTILE
    )


# --- generated bodies ---------------------------------------------------------------------------

MODES = ("rest", "binary", "structured", "batch")


def _send(url: str, mode: str, payload: Any, index: int) -> Reply:
    if mode == "rest":
        return request(url, "POST", REST, body_of(payload), {"Content-Type": "application/json"})
    if mode == "binary":
        return request(url, "POST", "/", body_of(payload), binary_headers(ce_id=f"gen-{index}"))
    item = structured(data=payload, id=f"gen-{index}")
    if mode == "structured":
        return request(url, "POST", "/", body_of(item), {"Content-Type": STRUCTURED})
    return request(url, "POST", "/", body_of([item]), {"Content-Type": BATCH})


payloads = st.one_of(
    json_values,
    st.builds(with_value, st.sampled_from(FIELD_PATHS), json_values),
)


def _without_lone_surrogates(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_generated_bodies_are_never_5xx_and_refused_ones_store_nothing(function_url, stored):
    sent = iter(range(10**6))

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(mode=st.sampled_from(MODES), payload=payloads)
    def check(mode: str, payload: Any) -> None:
        before = stored()
        reply = _send(function_url, mode, payload, next(sent))
        assert reply.status < 500, (mode, reply.status, reply.body[:300])
        assert b"Traceback" not in reply.body
        if reply.status >= 400:
            assert_problem(reply, reply.status)
            assert stored() == before, (mode, payload)

    check()


def test_rest_lone_surrogate_is_a_400(function_url, stored):
    body = json.dumps(detection(detection_id="d\ud800")).encode()  # ASCII JSON with "\ud800"
    reply = request(function_url, "POST", REST, body, {"Content-Type": "application/json"})
    assert_problem(reply, 400)
    assert stored() == (0, 0, 0)


@pytest.mark.parametrize("path", ["/api/v1/detections/a%0Ab", "/robots.txt", "/favicon.ico"])
def test_paths_the_framework_routes_itself_are_problems_too(function_url, path):
    assert_problem(request(function_url, "GET", path), 404)
