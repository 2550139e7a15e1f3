"""A second baseline of the ingest benchmarks: the trivial endpoint plus one Redis round trip
(``PING`` through redis-py), served with the same server settings as the real function.

The function must have its write confirmed by Redis before it answers; this endpoint does only
that wait. Its rate over the trivial endpoint's is what one round trip costs a served worker (the
GIL handed to another thread while the socket waits), before any validation, geolocation or
encoding: the part of the single-request ratio that no work in the function can win back.
"""

import os

import functions_framework
import redis
from flask import Request

_REDIS = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5)


@functions_framework.http
def round_trip(request: Request) -> tuple[str, int]:
    request.get_data()
    _REDIS.ping()
    return "ok", 200
