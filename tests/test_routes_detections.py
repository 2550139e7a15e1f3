"""The v1 route's content negotiation: the fast answers agree with werkzeug's ``best_match``."""

from __future__ import annotations

import pytest
from flask import Flask

from detection_api.app.routes.detections import _WANTS_JSON, JSON, XML, wants_json

HEADERS = [
    None,
    "",
    "*/*",
    JSON,
    XML,
    "application/*",
    "text/html",
    "APPLICATION/JSON",
    " application/json",
    "application/json;q=0.5, application/xml",
    "application/xml;q=0.1, application/json",
    "application/json, */*",
    "application/json;q=0",
    "text/xml, application/json;q=0.9",
]


@pytest.mark.parametrize("accept", HEADERS)
def test_wants_json_agrees_with_werkzeug(accept: str | None) -> None:
    headers = {} if accept is None else {"Accept": accept}
    with Flask(__name__).test_request_context(headers=headers) as ctx:
        expected = ctx.request.accept_mimetypes.best_match([XML, JSON], default=XML) == JSON
        assert wants_json(ctx.request.headers.get("Accept")) is expected


def test_every_fast_answer_is_one_werkzeug_gives() -> None:
    for accept, answer in _WANTS_JSON.items():
        headers = {} if accept is None else {"Accept": accept}
        with Flask(__name__).test_request_context(headers=headers) as ctx:
            best = ctx.request.accept_mimetypes.best_match([XML, JSON], default=XML)
            assert (best == JSON) is answer, accept


def test_json_only_when_preferred() -> None:
    # A pure function of the header value: no request context needed.
    assert wants_json("text/html") is False
    assert wants_json("application/json;q=0.9") is True
