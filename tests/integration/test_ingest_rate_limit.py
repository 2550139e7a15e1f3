"""The ingest routes' rate limit, the real function on a real Redis: over the limit nothing is
stored, the answer is the same 429 as on every other route, the budget is the one other routes
share, and a request the ingest rejects before storing still pays. (These hold whichever round
trip makes the charge; since the charge moved into the write script, store/atomic.py.)
"""

from __future__ import annotations

import json

import pytest
from cloudevents.conversion import to_structured
from http_client import request
from product import start_function
from test_function_http import assert_problem, detection, event
from test_hostile_producers import BATCH, SECRET, TEAM_A, TEAM_B, v1

from detection_api.local.ports import free_port


@pytest.fixture
def limited(redis_server, start_process):
    """Start the function with a rate limit; returns ``start(rate_limit) -> base URL``."""

    def start(rate_limit: str) -> str:
        env = {"REDIS_URL": redis_server.url, "JWT_SECRET_KEY": SECRET, "RATE_LIMIT": rate_limit}
        return start_function(start_process, env, name=f"function-{free_port()}")

    return start


def test_over_the_limit_a_batch_stores_nothing_and_says_so_like_any_route(limited, redis_server):
    url = limited("150/minute")
    redis = redis_server.client()
    assert v1(url, [detection() for _ in range(100)], TEAM_A).status == 201  # 100 of 150
    assert redis.llen("rq:queue:tak") == 1
    limited = v1(url, [detection() for _ in range(100)], TEAM_A)  # 101 + 99 > 150
    body = assert_problem(limited, 429)
    assert body["detail"].startswith("rate limit of 150 per 1 minute exceeded")
    assert limited.header("ratelimit-limit") == "150"
    assert int(limited.header("ratelimit-remaining")) == 49  # 101 of 150 paid: the arrival counts
    assert int(limited.header("retry-after")) >= 1
    assert redis.llen("rq:queue:tak") == 1  # nothing of the limited batch was stored
    # A read on another route pays from the same budget, charged by the limits library itself.
    assert request(url, "GET", "/api/v1/detections/none", None, TEAM_A).status == 404
    assert v1(url, [detection() for _ in range(48)], TEAM_A).status == 201  # 102 + 48 = 150
    assert_problem(v1(url, detection(), TEAM_A), 429)
    assert v1(url, detection(), TEAM_B).status == 201  # another producer has its own budget


def test_cloudevents_on_slash_are_charged_per_detection(limited, redis_server):
    url = limited("5/minute")
    events = [json.loads(to_structured(event(detection(), f"e{i}", "/s"))[1]) for i in range(5)]
    headers = {"Content-Type": BATCH, **TEAM_A}
    assert request(url, "POST", "/", json.dumps(events).encode(), headers).status == 200
    more = [json.loads(to_structured(event(detection(), "e9", "/s"))[1])]
    assert_problem(request(url, "POST", "/", json.dumps(more).encode(), headers), 429)
    assert redis_server.client().llen("rq:queue:tak") == 1


def test_requests_rejected_before_storing_still_pay_and_are_then_throttled(limited):
    url = limited("3/minute")
    invalid = {**detection(), "ai_confidence": "very"}
    for _ in range(3):
        assert_problem(v1(url, invalid, TEAM_A), 400)  # answered, then charged 1 each
    # The budget is spent: the next bad request, and a good one, are 429.
    assert_problem(v1(url, invalid, TEAM_A), 429)
    assert_problem(v1(url, detection(), TEAM_A), 429)


def test_requests_the_route_refuses_before_the_ingest_pay_after_their_answer(limited):
    """415, malformed JSON and unsupported CloudEvent types never reach the write script: they pay
    their one request after the answer, so a producer cannot spend CPU for free."""
    url = limited("3/minute")
    as_csv = {"Content-Type": "text/csv", **TEAM_A}
    assert_problem(request(url, "POST", "/api/v1/detections", b"a,b", as_csv), 415)
    as_json = {"Content-Type": "application/json", **TEAM_A}
    assert_problem(request(url, "POST", "/api/v1/detections", b"{not json", as_json), 400)
    wrong_type = json.loads(to_structured(event(detection(), "e1", "/s"))[1])
    wrong_type["type"] = "com.example.other"
    headers = {"Content-Type": BATCH, **TEAM_A}
    assert_problem(request(url, "POST", "/", json.dumps([wrong_type]).encode(), headers), 400)
    assert_problem(v1(url, detection(), TEAM_A), 429)  # the three answers spent the budget
    assert v1(url, detection(), TEAM_B).status == 201


def test_an_empty_list_is_a_400_that_pays(limited):
    url = limited("2/minute")
    assert_problem(v1(url, [], TEAM_A), 400)
    assert_problem(v1(url, [], TEAM_A), 400)
    assert_problem(v1(url, detection(), TEAM_A), 429)
