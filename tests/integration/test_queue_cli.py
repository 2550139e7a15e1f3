"""``detection-api queue status|dead|requeue|purge`` against a real Redis, forwarder and taky."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from test_forwarder import enqueue, states

from detection_api.commands.queue import parse_duration
from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok
from detection_api.local.procs import wait_until
from detection_api.store.audit import AuditLog
from detection_api.store.tak_jobs import dead_letter

CLI = str(Path(sys.executable).parent / "detection-api")


def queue_cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "queue", *args],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("7d") == 7 * 86_400
    assert parse_duration("5") == 5


def test_status_dead_requeue_and_purge(redis_server, taky_tls, tak_subscriber, start_process):
    redis = redis_server.client()
    items = enqueue(redis, 3, prefix="ops")
    # Two of them failed earlier (e.g. attempts exhausted during a bad certificate period).
    with redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        for item in items[:2]:
            job = Job.fetch(item.record_id, connection=redis, serializer=JSONSerializer)
            redis.lrem("rq:queue:tak", 1, item.record_id)
            dead_letter(job, "no confirmation after 10 attempt(s)", pipe)
        pipe.execute()

    listed = json.loads(queue_cli(redis_server.url, "dead", "--json").stdout)
    assert {d["job_id"] for d in listed} == {items[0].record_id, items[1].record_id}
    assert all("no confirmation" in d["reason"] for d in listed)
    status = json.loads(queue_cli(redis_server.url, "status", "--json").stdout)
    assert status["depth"]["tak"] == 1
    assert status["dead_letters"]["tak"] == 2
    assert status["forwarders"] == []

    metrics_port = free_port()
    start_process(
        "forwarder",
        ["detection-api", "worker"],
        env={
            "REDIS_URL": redis_server.url,
            **taky_tls.client_env(),
            "FORWARDER_METRICS_PORT": str(metrics_port),
        },
        ready=lambda: http_ok(f"http://127.0.0.1:{metrics_port}/health"),
    )
    tak_subscriber.wait_for_uids({items[2].uid}, timeout=30)
    text = queue_cli(redis_server.url, "status").stdout
    assert "alive" in text
    assert "TAK connected" in text
    assert "2 tak" in text

    requeued = queue_cli(redis_server.url, "requeue", items[0].record_id)
    assert requeued.returncode == 0, requeued.stderr
    tak_subscriber.wait_for_uids({items[0].uid}, timeout=30)
    wait_until(lambda: states(redis, items[:1]) == {"confirmed": 1}, 20, what="requeued confirmed")
    assert queue_cli(redis_server.url, "requeue", "no-such-job").returncode == 1

    purged = queue_cli(redis_server.url, "purge", "--dead", "--older-than", "0s")
    assert "purged 1" in purged.stdout
    assert len(FailedJobRegistry("tak", connection=redis)) == 0
    trail = AuditLog(redis, max_len=1000, retention_seconds=3600).events_for(items[0].record_id)
    assert [e["event"] for e in trail][-2:] == ["requeued", "confirmed"]
