"""security.RateLimits: the charges an ingest takes in its write script are the limits library's
own windows (a hit on another route and a charge in the write share one budget), in the order
separate hits took them, and a refused charge answers the 429 of its rule. Real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, g

from detection_api.app.problems import Problem
from detection_api.app.security import RateLimits
from detection_api.auth import Principal
from detection_api.local.redis_server import RedisServer
from detection_api.settings import Settings
from detection_api.store.atomic import AtomicWriter, RateLimited


def limits_for(server: RedisServer, rate_limit: str) -> RateLimits:
    settings = Settings(redis_url=server.url, jwt_secret_key="k" * 40, rate_limit=rate_limit)
    return RateLimits(settings)


@pytest.fixture
def as_producer() -> Iterator[None]:
    app = Flask("t")
    with app.test_request_context("/api/v1/detections", method="POST"):
        g.principal = Principal("camera-operator", frozenset({"detections:write"}), "jwt")
        yield


def test_arrival_then_the_rest_under_every_rule(
    redis_server: RedisServer, as_producer: None
) -> None:
    charges = limits_for(redis_server, "100/second;1000/hour").window_charges(5)
    assert [(c.limit, c.expiry_seconds, c.amount) for c in charges] == [
        (100, 1, 1),
        (1000, 3600, 1),
        (100, 1, 4),
        (1000, 3600, 4),
    ]
    assert all("sub:camera-operator" in c.current_key for c in charges)
    assert [
        (c.limit, c.amount) for c in limits_for(redis_server, "7/minute").window_charges(1)
    ] == [(7, 1)]


def test_a_charge_in_the_write_and_a_hit_elsewhere_share_one_budget(
    redis_server: RedisServer, as_producer: None
) -> None:
    limits = limits_for(redis_server, "10/minute")
    writer = AtomicWriter(redis_server.client())
    writer.charge(limits.window_charges(6))  # an ingest of 6, taken by the write script
    limits.charge(3)  # a read on another route: the library's own hit
    stats = limits.limiter.get_window_stats(limits.rules[0], "sub:camera-operator")
    assert stats.remaining == 1
    with pytest.raises(RateLimited) as refused:
        writer.charge(limits.window_charges(2))  # arrival fits (10), the rest does not
    assert refused.value.index == 1
    problem = limits.refused(refused.value.index)
    assert problem.status == 429
    assert problem.headers["RateLimit-Limit"] == "10"
    assert problem.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(problem.headers["Retry-After"]) <= 60
    with pytest.raises(Problem):
        limits.charge(1)
