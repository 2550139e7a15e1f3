"""A small closed-loop HTTP load generator for loopback benchmarks (stdlib only).

``concurrency`` keep-alive connections, spread over a few processes (one Python process cannot
drive more than ~1 core), each sending the same request back to back for ``seconds``. Latency is
per request; the rate is completed requests per second over the whole run. Bounded in time; only
127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import http.client
import multiprocessing as mp
import statistics
import threading
import time
from dataclasses import dataclass

MARKER = "@@N@@"  # replaced in headers and body by a token unique to each request


@dataclass(frozen=True)
class RequestSpec:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None

    def render(self, token: str) -> tuple[dict[str, str], bytes | None]:
        """Headers and body with MARKER replaced, so every request is a new event (an idempotent
        redelivery would take the cheaper duplicate path and flatter the figures)."""
        headers = {k: v.replace(MARKER, token) for k, v in self.headers.items()}
        body = self.body.replace(MARKER.encode(), token.encode()) if self.body else self.body
        return headers, body


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int  # non-2xx or connection errors
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_us: float = float("nan")  # server-side CPU per request, when the caller measured it

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _connection_loop(
    port: int, spec: RequestSpec, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    prefix = f"{mp.current_process().pid}-{threading.get_ident()}-"
    sent = 0
    while time.perf_counter() < deadline:
        sent += 1
        headers, body = spec.render(prefix + str(sent))
        started = time.perf_counter()
        try:
            conn.request(spec.method, spec.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            ok = 200 <= response.status < 300
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies.append(time.perf_counter() - started)
        if not ok:
            errors.append(1)
    conn.close()


def _process_main(
    port: int, spec: RequestSpec, threads: int, start_at: float, seconds: float, out: mp.Queue
) -> None:
    while time.time() < start_at:  # start together so all processes overlap fully
        time.sleep(0.001)
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors: list[int] = []
    workers = [
        threading.Thread(
            target=_connection_loop, args=(port, spec, deadline, latencies, errors), daemon=True
        )
        for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 60)
    out.put((latencies, len(errors)))


def run_load(
    port: int, spec: RequestSpec, *, concurrency: int = 16, seconds: float = 4.0, processes: int = 2
) -> LoadResult:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + 0.3
    per_process = max(1, concurrency // processes)
    procs = [
        ctx.Process(target=_process_main, args=(port, spec, per_process, start_at, seconds, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    latencies: list[float] = []
    errors = 0
    for _ in procs:
        lat, err = out.get(timeout=seconds + 120)
        latencies.extend(lat)
        errors += err
    for p in procs:
        p.join(30)
    latencies.sort()
    if not latencies:
        return LoadResult(0, errors, seconds, float("nan"), float("nan"))
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return LoadResult(
        requests=len(latencies) - errors,
        errors=errors,
        seconds=seconds,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=p99 * 1000,
    )
