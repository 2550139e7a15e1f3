"""End to end: accept-to-confirm latency at a steady rate well below saturation, through the real
function, Redis, the forwarder and taky over mutual TLS; and the forwarder's memory under load.

A paced sender posts single detections at ``RATE`` per second for ``SECONDS``; each record's
``confirmed_at - created_at`` (both stamped on this machine: when the function stored it, when the
forwarder saw taky's pong after it) is the latency. Baseline: the TAK ping/pong round trip on an
idle connection, the floor any confirmed delivery pays.
"""

from __future__ import annotations

import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import jwt

from bench import Row
from bench.processes import JWT_SECRET, REPO, Processes, rss_mib
from detection_api.local.pki import generate_pki
from detection_api.local.ports import free_port
from detection_api.local.procs import wait_until
from detection_api.local.taky_server import TakyServer, ensure_taky
from detection_api.settings import Settings
from detection_api.tak.transport import TlsFiles, open_connection

RATE = 200
SECONDS = 10.0
SENDERS = 8

EXAMPLE = json.loads((REPO / "examples" / "detection.json").read_text())
EXAMPLE.pop("detection_id", None)


def _paced_sender(port: int, token: str, start: float, offset: int, ids: list[str]) -> None:
    body = json.dumps(EXAMPLE).encode()
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": f"Bearer {token}",
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    total = int(RATE * SECONDS)
    for n in range(offset, total, SENDERS):
        due = start + n / RATE
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        conn.request("POST", "/api/v1/detections", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status == 201:
            ids.append(json.loads(payload)["id"])
    conn.close()


def _ping_rtt_ms(taky: TakyServer) -> float:
    env = taky.client_env("forwarder")
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    connection = open_connection(settings.tak_url, TlsFiles.from_settings(settings))
    connection.connect()
    try:
        samples = []
        for _ in range(50):
            started = time.perf_counter()
            connection.wait_confirmed(connection.send([]), timeout=10)
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)
    finally:
        connection.close()


def run() -> list[Row]:
    token = jwt.encode(
        {"sub": "bench", "scope": "detections:write", "exp": int(time.time()) + 3600},
        JWT_SECRET,
        algorithm="HS256",
    )
    ensure_taky()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, Processes(Path(tmp)) as procs:
        root = Path(tmp)
        redis = procs.start_redis()
        pki = generate_pki(root / "pki")
        taky = TakyServer(root / "taky", pki=pki).start()
        try:
            metrics_port = free_port()
            env = {
                "REDIS_URL": redis.url,
                "JWT_SECRET_KEY": JWT_SECRET,
                "RATE_LIMIT": "1000000/second",
                "LOG_LEVEL": "WARNING",
                **taky.client_env("forwarder"),
            }
            forwarder = procs.start(
                "forwarder",
                [str(Path(procs.function_argv(0)[0]).parent / "detection-api"), "worker"],
                {**env, "FORWARDER_METRICS_PORT": str(metrics_port)},
                f"http://127.0.0.1:{metrics_port}/health",
            )
            port = procs.start_function("function", env)
            ids: list[str] = []
            start = time.perf_counter() + 0.2
            senders = [
                threading.Thread(target=_paced_sender, args=(port, token, start, i, ids))
                for i in range(SENDERS)
            ]
            for sender in senders:
                sender.start()
            peak_rss = 0.0
            while any(s.is_alive() for s in senders):
                peak_rss = max(peak_rss, rss_mib(forwarder.pid))
                time.sleep(0.5)
            client = redis.client()

            def all_confirmed() -> bool:
                with client.pipeline(transaction=False) as pipe:
                    for rid in ids:
                        pipe.hget(f"detection:record:{rid}", "state")
                    return all(s == b"confirmed" for s in pipe.execute())

            wait_until(all_confirmed, timeout=60, what="every detection confirmed")
            with client.pipeline(transaction=False) as pipe:
                for rid in ids:
                    pipe.hmget(f"detection:record:{rid}", "created_at", "confirmed_at")
                stamps = pipe.execute()
            latencies = sorted((float(c) - float(a)) * 1000 for a, c in stamps)
            rtt = _ping_rtt_ms(taky)
        finally:
            taky.stop()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    baseline = "TAK ping/pong round trip, idle connection"
    sent = len(ids)
    return [
        Row(
            f"accept-to-confirm p50 at {RATE}/s ({sent} sent)",
            statistics.median(latencies),
            "ms",
            rtt,
            baseline,
        ),
        Row(f"accept-to-confirm p99 at {RATE}/s", p99, "ms", rtt, baseline),
        Row("forwarder peak resident memory (PSS)", peak_rss, "MiB"),
    ]
