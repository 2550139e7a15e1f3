"""Instructions the function executes per ingest request, counted by valgrind's callgrind.

Timings on this shared two-core machine move by more than most changes to the hot path; an
instruction count does not move with the neighbours' load, so a before/after of one change is
one number each. The function's Flask app is called as WSGI in-process (no HTTP server, one
thread) against a real Redis, ``SMALL`` then ``LARGE`` requests after a warm-up; the difference
of the two totals over the difference of the counts is the cost of one request, start-up
excluded. Redis's own work is not counted (another process), nor are the system calls' kernel
time and thread switches, which only the HTTP rows of ``bench.ingest`` show.

    .venv/bin/python -m bench.instructions [--list 100] [--ids]

``--ids`` gives every detection its own ``detection_id``, as v1 producers that retry send it: each
then also writes its idempotency marker (the CloudEvents path always does).

Needs valgrind (Debian's package); one to two minutes for single requests, two to four for
lists. Runs on one commit agree to about 0.3%. Not part of ``make bench``'s default set.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt

from bench.processes import JWT_SECRET, REPO, Processes

EXAMPLE = json.loads((REPO / "examples" / "detection.json").read_text())
EXAMPLE.pop("detection_id", None)  # each request a new detection
ID_MARKER = "@@ID@@"
WARM_UP = 20
# (small, large) for single requests / lists. 30 lists, not 10: with 10, runs on one commit
# spread over 5% (one garbage collection more or less shows); with 30, over 0.3%.
COUNTS = {False: (50, 250), True: (3, 33)}
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _environ(body: bytes, token: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/detections",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_ACCEPT": "application/json",
        "HTTP_HOST": "127.0.0.1:8080",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _bodies(list_size: int, ids: bool) -> Iterator[bytes]:
    """Request bodies: the same one each time, or with ``ids`` new detection ids in each (one
    ``bytes.replace`` per request, a few microseconds against the request's millions of
    instructions). The ids name the process: the small and the large run share one Redis, and
    ids repeated from the other run would be answered as redeliveries."""
    items = [
        dict(EXAMPLE, detection_id=f"{ID_MARKER}-{i}") if ids else EXAMPLE
        for i in range(max(1, list_size))
    ]
    body = json.dumps(items if list_size else items[0]).encode()
    for n in itertools.count():
        yield body.replace(ID_MARKER.encode(), b"p%d-r%d" % (os.getpid(), n)) if ids else body


def serve(requests: int, list_size: int, ids: bool = False) -> None:
    """The measured process: ``requests`` ingest requests in-process (REDIS_URL from the env)."""
    from detection_api.app.collector import settle_collector
    from detection_api.app.http_app import create_app
    from detection_api.logs import configure_logging
    from detection_api.settings import load_settings

    settings = load_settings(
        REDIS_URL=os.environ["REDIS_URL"],
        JWT_SECRET_KEY=os.environ["JWT_SECRET_KEY"],
        RATE_LIMIT="1000000/second",
        LOG_LEVEL="WARNING",
    )
    configure_logging(settings.log_level)
    app = create_app(settings)
    settle_collector()  # as functions/main.py does once the app is built
    claims = {"sub": "bench", "scope": "detections:write", "exp": int(time.time()) + 3600}
    token = jwt.encode(claims, os.environ["JWT_SECRET_KEY"], algorithm="HS256")
    bodies = _bodies(list_size, ids)
    statuses: list[str] = []

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        statuses.append(status)

    for _ in range(WARM_UP + requests):
        b"".join(app(_environ(next(bodies), token), start_response))
    failed = [s for s in statuses if not s.startswith("201")]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed: {failed[0]}")


def _instructions(requests: int, list_size: int, ids: bool, env: dict[str, str]) -> int:
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--serve",
        str(requests),
        "--list",
        str(list_size),
        *(["--ids"] if ids else []),
    ]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run failed: {done.stderr[-2000:]}")
    return int(found.group(1))


def measure(list_size: int, ids: bool = False) -> float:
    """Instructions per request (per detection for lists)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    small, large = COUNTS[bool(list_size)]
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp, Processes(Path(tmp)) as procs:
        redis = procs.start_redis()
        # A fixed hash seed: string hashing (dict and set layouts) is otherwise random per process.
        env = {
            **os.environ,
            "REDIS_URL": redis.url,
            "JWT_SECRET_KEY": JWT_SECRET,
            "PYTHONHASHSEED": "0",
        }
        totals = [_instructions(n, list_size, ids, env) for n in (small, large)]
    per_request = (totals[1] - totals[0]) / (large - small)
    return per_request / list_size if list_size else per_request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--list", type=int, default=0, help="send REST lists of this many")
    parser.add_argument(
        "--ids", action="store_true", help="a detection_id in every detection (markers written)"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the measured child
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.list, args.ids)
        return 0
    per = measure(args.list, args.ids)
    what = f"per detection in lists of {args.list}" if args.list else "per single REST request"
    what += ", each with its detection_id" if args.ids else ""
    print(f"{per:,.0f} instructions {what} (callgrind, in-process, start-up excluded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
