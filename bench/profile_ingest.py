"""Where a single REST detection request spends its time: cProfile of the product's Flask app
in-process (the Flask test client, a real Redis, JWT auth and the Redis-backed rate limit on),
``N`` requests (single detections, or ``--list`` of them), top functions by own or cumulative
time. Run:

    .venv/bin/python -m bench.profile_ingest [--requests N] [--top 15] [--sort tottime]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import jwt

from bench.processes import JWT_SECRET, REPO, Processes
from detection_api.app.collector import settle_collector
from detection_api.app.http_app import create_app
from detection_api.logs import configure_logging
from detection_api.settings import load_settings

EXAMPLE = json.loads((REPO / "examples" / "detection.json").read_text())
EXAMPLE.pop("detection_id", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ingest", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    parser.add_argument("--list", type=int, default=0, help="send REST lists of this many")
    args = parser.parse_args(argv)
    token = jwt.encode(
        {"sub": "bench", "scope": "detections:write", "exp": int(time.time()) + 3600},
        JWT_SECRET,
        algorithm="HS256",
    )
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    body = json.dumps([EXAMPLE] * args.list if args.list else EXAMPLE).encode()
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp, Processes(Path(tmp)) as procs:
        redis = procs.start_redis()
        settings = load_settings(
            REDIS_URL=redis.url,
            JWT_SECRET_KEY=JWT_SECRET,
            RATE_LIMIT="1000000/second",
            LOG_LEVEL="WARNING",
        )
        configure_logging(settings.log_level)
        client = create_app(settings).test_client()
        settle_collector()  # as functions/main.py does once the app is built

        def one() -> None:
            response = client.post(
                "/api/v1/detections", data=body, content_type="application/json", headers=headers
            )
            if response.status_code != 201:
                raise RuntimeError(f"{response.status_code}: {response.get_data(as_text=True)}")

        for _ in range(200):  # warm: imports, caches, connections
            one()
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(args.requests):
            one()
        plain = (time.perf_counter() - started) / args.requests
        cpu = (time.process_time() - cpu_started) / args.requests
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        for _ in range(args.requests):
            one()
        profile.disable()
        elapsed = time.perf_counter() - started
    print(
        f"{args.requests} requests: {plain * 1e6:.0f} us each, {cpu * 1e6:.0f} us of this "
        "process's CPU (test client included), "
        f"{elapsed / args.requests * 1e6:.0f} us under cProfile"
    )
    stats = pstats.Stats(profile)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
