"""How many requests one function pod works on at once before more only wait: the measurement
behind THREADS, containerConcurrency and the autoscaling target of knative/ (README.md
"Autoscaling").

One function process pinned to one CPU (`taskset -c 0`; a pod's limit is half of one), 16 gunicorn
threads so that gunicorn is not the limit, closed-loop clients posting single binary CloudEvents
with a token (the product path: auth, rate limit, validation, geolocation, CoT, Redis). For each
client concurrency: completed requests per second, p50 and p99 latency. Run:

    .venv/bin/python -m bench.concurrency
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.ingest import _specs, _token
from bench.loadgen import run_load
from bench.processes import JWT_SECRET, Processes
from detection_api.local.ports import free_port

LEVELS = (1, 2, 4, 6, 8, 12, 16)
SECONDS = 3.0


def main() -> int:
    spec = _specs(_token())["binary"]
    with tempfile.TemporaryDirectory(prefix="bench-conc-") as tmp, Processes(Path(tmp)) as procs:
        redis = procs.start_redis()
        port = free_port()
        env = {
            "REDIS_URL": redis.url,
            "JWT_SECRET_KEY": JWT_SECRET,
            "RATE_LIMIT": "1000000/second",
            "LOG_LEVEL": "WARNING",
            "WORKERS": "1",
            "THREADS": "16",
        }
        argv = ["taskset", "-c", "0", *procs.function_argv(port)]
        procs.start("function", argv, env, f"http://127.0.0.1:{port}/health")
        print("concurrency  req/s   p50 ms  p99 ms  errors")
        for level in LEVELS:
            result = run_load(port, spec, concurrency=level, seconds=SECONDS, processes=1)
            print(
                f"{level:11d}  {result.rate:6.0f}  {result.p50_ms:6.1f}  {result.p99_ms:6.1f}"
                f"  {result.errors}"
            )
            redis.client().flushall()
    return 0


if __name__ == "__main__":
    sys.exit(main())
