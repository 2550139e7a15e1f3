"""Ingest throughput and latency of the function, cold start and memory, next to a trivial
functions-framework endpoint under the same server settings (1 worker, 8 threads).

Issue #12's ingest targets are two rows: a single REST v1 detection at >= 0.5x the trivial
endpoint's requests/s, and REST lists of 100 at >= 12x the single REST requests/s (detections/s).

Our path is the product path: JWT verification, the Redis-backed rate limit (set high enough not
to trigger), validation, geolocation, CoT, and the Redis transaction that stores record + job.
Runs alternate (baseline, ours, baseline, ours...) and ratios are per adjacent pair, medians taken.
A second baseline, the trivial endpoint plus one Redis PING (``round_trip_function.py``), shows
how much of the single-request ratio the one round trip an accepted write needs takes by itself.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from bench import Row
from bench.loadgen import MARKER, LoadResult, RequestSpec, run_load
from bench.processes import JWT_SECRET, REPO, ROUND_TRIP_SOURCE, Processes, rss_mib
from detection_api.local.ports import free_port

EXAMPLE = json.loads((REPO / "examples" / "detection.json").read_text())
EXAMPLE.pop("detection_id", None)
CONCURRENCY = 16
SECONDS = 4.0
ROUNDS = 5  # pairs per ratio (with 3, the lists ratio moved by 15% between two runs in a row)
BATCH = 100
SINGLE_TARGET = 0.5  # single REST requests/s over the trivial endpoint's (issue #12)
LIST_TARGET = 12.0  # detections/s in REST lists of 100 over single REST requests/s (issue #12)
LIST_CONCURRENCY = 4


def _token() -> str:
    claims = {"sub": "bench", "scope": "detections:write", "exp": int(time.time()) + 3600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _event(event_id: str) -> CloudEvent:
    return CloudEvent(
        {
            "type": "org.detectionapi.detection.created",
            "source": "/bench",
            "id": event_id,
            "datacontenttype": "application/json",
        },
        EXAMPLE,
    )


def _specs(token: str) -> dict[str, RequestSpec]:
    auth = {"Authorization": f"Bearer {token}"}
    headers, body = to_binary(_event(MARKER))
    binary = RequestSpec("POST", "/", {**dict(headers), **auth}, body)
    rest = RequestSpec(
        "POST",
        "/api/v1/detections",
        {"Content-Type": "application/json", "Accept": "application/json", **auth},
        json.dumps(EXAMPLE).encode(),
    )
    items = [json.loads(to_structured(_event(f"{MARKER}-{i}"))[1]) for i in range(BATCH)]
    batch = RequestSpec(
        "POST",
        "/",
        {"Content-Type": "application/cloudevents-batch+json", **auth},
        json.dumps(items).encode(),
    )
    rest_list = RequestSpec(
        "POST", "/api/v1/detections", rest.headers, json.dumps([EXAMPLE] * BATCH).encode()
    )
    return {"binary": binary, "rest": rest, "batch": batch, "rest_list": rest_list}


def _cold_start(procs: Processes, redis_url: str, token: str) -> float:
    """Seconds from spawning the function to its first 201 on a real detection."""
    port = free_port()
    body = json.dumps(EXAMPLE).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    env = {"REDIS_URL": redis_url, "JWT_SECRET_KEY": JWT_SECRET}
    procs.start_function_unready("cold", port, env)
    deadline = started + 30
    while time.perf_counter() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/api/v1/detections", body=body, headers=headers)
            if conn.getresponse().status == 201:
                return time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
        finally:
            conn.close()
    raise TimeoutError("the function did not answer 201 within 30 s")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of processes and their children (gunicorn master + worker), seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        children = Path(f"/proc/{pid}/task/{pid}/children")
        tree = [pid]
        if children.exists():
            tree += [int(c) for c in children.read_text().split()]
        for p in tree:
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _measured(pids: list[int], spec: RequestSpec, port: int, **load: Any) -> LoadResult:
    """A load run, with the CPU the server side (function + Redis) spent on it per request."""
    before = _cpu_seconds(pids)
    result = run_load(port, spec, **load)
    spent = _cpu_seconds(pids) - before
    return dataclasses.replace(result, cpu_us=spent / max(1, result.requests) * 1e6)


def run() -> list[Row]:
    token = _token()
    specs = _specs(token)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, Processes(Path(tmp)) as procs:
        redis = procs.start_redis()
        env = {
            "REDIS_URL": redis.url,
            "JWT_SECRET_KEY": JWT_SECRET,
            "RATE_LIMIT": "1000000/second",
            "LOG_LEVEL": "WARNING",
        }
        ours = procs.start_function("function", env)
        trivial = procs.start_function("trivial", {}, trivial=True)
        round_trip = procs.start_function(
            "round-trip", {"REDIS_URL": redis.url}, baseline=(ROUND_TRIP_SOURCE, "round_trip")
        )
        our_pids = [procs.started[0].pid, redis.pid]
        trivial_pids = [procs.started[1].pid]
        round_trip_pids = [procs.started[2].pid, redis.pid]
        trivial_spec = RequestSpec("POST", "/", specs["binary"].headers, specs["binary"].body)

        results: dict[str, list[LoadResult]] = {
            n: [] for n in ("trivial", "round_trip", "binary", "rest", "batch", "rest_list")
        }
        load = {"concurrency": CONCURRENCY, "seconds": SECONDS}
        for _ in range(ROUNDS):
            results["trivial"].append(_measured(trivial_pids, trivial_spec, trivial, **load))
            results["round_trip"].append(
                _measured(round_trip_pids, trivial_spec, round_trip, **load)
            )
            for name in ("binary", "rest"):
                results[name].append(_measured(our_pids, specs[name], ours, **load))
            for name in ("batch", "rest_list"):
                results[name].append(
                    _measured(
                        our_pids,
                        specs[name],
                        ours,
                        concurrency=LIST_CONCURRENCY,
                        seconds=SECONDS,
                    )
                )
            redis.client().flushall()
        function_rss = rss_mib(procs.started[0].pid)
        cold = statistics.median(_cold_start(procs, redis.url, token) for _ in range(3))

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results[name])

    def pair_ratio(name: str, baseline: str = "trivial") -> float:
        return statistics.median(
            o.rate / t.rate for o, t in zip(results[name], results[baseline], strict=True)
        )

    errors = sum(r.errors for rs in results.values() for r in rs)
    if errors:
        raise RuntimeError(f"{errors} requests failed during the ingest benchmark")
    trivial_name = f"trivial functions-framework endpoint, {CONCURRENCY} connections"
    batch_rate = [r.rate * BATCH for r in results["batch"]]
    single_rate = [r.rate for r in results["binary"]]
    list_rate = [r.rate * BATCH for r in results["rest_list"]]
    rest_rate = [r.rate for r in results["rest"]]
    rest_ratio = pair_ratio("rest")
    list_ratio = statistics.median(m / s for m, s in zip(list_rate, rest_rate, strict=True))
    return [
        Row(
            "CloudEvent binary, req/s",
            med("binary", "rate"),
            "req/s",
            med("trivial", "rate"),
            trivial_name,
            pair_ratio("binary"),
        ),
        Row(
            "CloudEvent binary p50",
            med("binary", "p50_ms"),
            "ms",
            med("trivial", "p50_ms"),
            trivial_name,
        ),
        Row(
            "CloudEvent binary p99",
            med("binary", "p99_ms"),
            "ms",
            med("trivial", "p99_ms"),
            trivial_name,
        ),
        Row(
            "REST v1 single detection, req/s",
            med("rest", "rate"),
            "req/s",
            med("trivial", "rate"),
            trivial_name,
            rest_ratio,
            target=f">= {SINGLE_TARGET}x",
            meets_target=rest_ratio >= SINGLE_TARGET,
        ),
        Row("REST v1 p99", med("rest", "p99_ms"), "ms", med("trivial", "p99_ms"), trivial_name),
        Row(
            "trivial endpoint + one Redis PING (the round trip alone), req/s",
            med("round_trip", "rate"),
            "req/s",
            med("trivial", "rate"),
            trivial_name,
            pair_ratio("round_trip"),
        ),
        Row(
            "REST v1 single detection next to the round trip alone, req/s",
            med("rest", "rate"),
            "req/s",
            med("round_trip", "rate"),
            "trivial endpoint + one Redis PING",
            pair_ratio("rest", "round_trip"),
        ),
        Row(
            "REST v1 single: server CPU per request (function + Redis)",
            med("rest", "cpu_us"),
            "us",
            med("trivial", "cpu_us"),
            "trivial endpoint's process, per request",
        ),
        Row(
            f"REST v1 lists of {BATCH}: server CPU per detection (function + Redis)",
            med("rest_list", "cpu_us") / BATCH,
            "us",
            med("rest", "cpu_us"),
            "single REST v1 request",
        ),
        Row(
            f"batch of {BATCH} CloudEvents, detections/s",
            statistics.median(batch_rate),
            "detections/s",
            statistics.median(single_rate),
            "single binary CloudEvents",
            statistics.median(b / s for b, s in zip(batch_rate, single_rate, strict=True)),
        ),
        Row(
            f"REST v1 lists of {BATCH}, detections/s",
            statistics.median(list_rate),
            "detections/s",
            statistics.median(rest_rate),
            "single REST v1 requests",
            list_ratio,
            target=f">= {LIST_TARGET:g}x",
            meets_target=list_ratio >= LIST_TARGET,
        ),
        Row("cold start to first 201", cold, "s"),
        Row("function resident memory (PSS) after load", function_rss, "MiB"),
    ]
