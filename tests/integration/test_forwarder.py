"""The TAK forwarder (``detection-api worker``) against real Redis, real taky and a TAK subscriber.

Detections are enqueued exactly as ingest does it (record + rq job in one MULTI); the subscriber,
another client of the same taky, is the witness of what really arrived. The helpers at the top are
shared with ``test_forwarder_durability.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from tak_subscriber import TakSubscriber

from detection_api.cot import DetectionFacts, build_detection_event
from detection_api.geo.types import ConfidenceFlag, Geolocation
from detection_api.local.pki import PkiPaths
from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok
from detection_api.local.procs import ManagedProcess, wait_until
from detection_api.local.redis_server import RedisServer
from detection_api.local.taky_server import TakyServer
from detection_api.store.records import DeliveryState, RecordStore, record_key
from detection_api.store.tak_jobs import DELIVER_FUNC, Delivery, enqueue_deliveries, tak_queue
from detection_api.tak.forwarder_metrics import ForwarderMetrics, MetricsServer

RETENTION_SECONDS = 3600
_GEOLOCATION = Geolocation(
    lat_deg=50.1109221,
    lon_deg=8.6821267,
    hae_m=112.0,
    slant_range_m=420.0,
    ground_distance_m=380.0,
    ce90_m=12.5,
    le90_m=4.0,
    ce_m=12.5 / 2.1460,
    le_m=4.0 / 1.6449,
    covariance_en_m2=(30.0, 1.0, 30.0),
    flag=ConfidenceFlag.GREEN,
)


# --- shared helpers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueued:
    record_id: str
    uid: str


def detection_cot(record_id: str, uid: str) -> str:
    """A real detection event, as the function builds it."""
    now = datetime.now(UTC)
    facts = DetectionFacts(
        record_id=record_id,
        detection_id=record_id,
        object_class="vehicle",
        ai_confidence=0.91,
        camera_id="cam-1",
    )
    return build_detection_event(
        uid=uid,
        cot_type="a-u-G-E-V",
        geolocation=_GEOLOCATION,
        facts=facts,
        generated_at=now,
        captured_at=now,
    )


def enqueue(
    redis: Redis, count: int, *, prefix: str = "det", accepted_at: float | None = None
) -> list[Enqueued]:
    """``count`` detections stored the way ingest stores them: record + job in one MULTI."""
    store = RecordStore(redis, RETENTION_SECONDS)
    queue = tak_queue(redis)
    enqueued: list[Enqueued] = []
    for start in range(0, count, 500):
        chunk = [uuid.uuid4().hex for _ in range(min(500, count - start))]
        with redis.pipeline(transaction=True) as pipe:
            pipe.multi()
            deliveries = []
            for record_id in chunk:
                uid = f"{prefix}-{record_id}"
                cot = detection_cot(record_id, uid)
                store.write_new(pipe, record_id, {"state": DeliveryState.QUEUED.value, "cot": cot})
                deliveries.append(Delivery(record_id, cot, accepted_at or time.time()))
                enqueued.append(Enqueued(record_id, uid))
            enqueue_deliveries(queue, pipe, deliveries)
            pipe.execute()
    return enqueued


def enqueue_payload(redis: Redis, record_id: str, kwargs: dict[str, object]) -> None:
    """One job with an arbitrary payload (e.g. from a newer function revision)."""
    store = RecordStore(redis, RETENTION_SECONDS)
    with redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        store.write_new(pipe, record_id, {"state": DeliveryState.QUEUED.value})
        tak_queue(redis).enqueue_call(
            DELIVER_FUNC,
            kwargs=kwargs,
            job_id=record_id,
            result_ttl=0,
            failure_ttl=None,
            ttl=None,
            pipeline=pipe,
        )
        pipe.execute()


def states(redis: Redis, items: list[Enqueued]) -> Counter[str]:
    with redis.pipeline(transaction=False) as pipe:
        for item in items:
            pipe.hget(record_key(item.record_id), "state")
        return Counter((s or b"missing").decode() for s in pipe.execute())


def attempts(redis: Redis, items: list[Enqueued]) -> Counter[int]:
    with redis.pipeline(transaction=False) as pipe:
        for item in items:
            pipe.hget(record_key(item.record_id), "attempts")
        return Counter(int(a or 0) for a in pipe.execute())


def failure_text(job: Job) -> str:
    result = job.latest_result()
    return (result.exc_string or "") if result is not None else ""


def leftover_claims(redis: Redis) -> int:
    return sum(redis.llen(key) for key in redis.scan_iter("detection:forwarder:*:inflight"))


@dataclass
class Worker:
    process: ManagedProcess
    metrics_port: int

    def metrics(self) -> dict[str, float]:
        """Samples by name with labels folded in, e.g. ``deliveries_total{outcome=confirmed}``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def delivered(self, outcome: str) -> float:
        return self.metric(f"detection_api_deliveries_total{{outcome={outcome}}}")

    def log(self) -> str:
        return self.process.log_text()


StartWorker = Callable[..., Worker]


def worker_starter(
    start_process: Callable[..., ManagedProcess], redis_server: RedisServer
) -> StartWorker:
    """``start(tak_env, name="worker", **env)``: a ``detection-api worker`` process, returned
    once its /health answers."""

    def start(tak_env: dict[str, str], name: str = "worker", **env: str) -> Worker:
        port = free_port()
        full_env = {
            "REDIS_URL": redis_server.url,
            "FORWARDER_METRICS_PORT": str(port),
            "TAK_CONFIRM_TIMEOUT_SECONDS": "5",
            "TAK_RECONNECT_MAX_SECONDS": "1",
            "RETENTION_SECONDS": str(RETENTION_SECONDS),
            "LOG_LEVEL": "INFO",
            **tak_env,
            **env,
        }
        process = start_process(
            name,
            ["detection-api", "worker"],
            env=full_env,
            ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
        )
        return Worker(process, port)

    return start


@pytest.fixture
def start_worker(
    start_process: Callable[..., ManagedProcess], redis_server: RedisServer
) -> StartWorker:
    return worker_starter(start_process, redis_server)


@contextmanager
def frozen(server: TakyServer) -> Iterator[None]:
    """taky paused (SIGSTOP): connections stay open, nothing is read or answered."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def wait_connected(worker: Worker, timeout: float = 20) -> None:
    worker.process.wait_until(
        lambda: worker.metric("detection_api_tak_connected") == 1.0,
        timeout,
        what="the TAK connection",
    )


# --- delivery ------------------------------------------------------------------------------------


def test_delivers_over_mutual_tls_and_skips_routed_events(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    worker = start_worker(taky_tls.client_env())
    items = enqueue(redis, 600)
    # Meanwhile another client publishes: taky routes those events to the forwarder too, whose
    # reader must skip them while counting pongs.
    for i in range(50):
        tak_subscriber.send(detection_cot(f"other-{i}", f"other-client-{i}").encode())

    received = tak_subscriber.wait_for_uids([i.uid for i in items], timeout=60)
    assert {e.uid for e in received} == {i.uid for i in items}
    wait_until(lambda: states(redis, items) == {"confirmed": 600}, 20, what="all confirmed")
    assert all(e.type == "a-u-G-E-V" and e.how == "m-i" for e in received)
    assert redis.llen("rq:queue:tak") == 0
    assert not list(redis.scan_iter("rq:job:*")), "delivered jobs are deleted (result_ttl=0)"
    assert leftover_claims(redis) == 0
    assert attempts(redis, items) == {0: 600}

    # The counters are incremented after the records are written: wait for the last of them
    # (deliveries, after the latency histogram and the batch sizes), then read them all.
    wait_until(lambda: worker.delivered("confirmed") == 600, 10, what="the confirmed counter")
    metrics = worker.metrics()
    assert metrics["detection_api_deliveries_total{outcome=confirmed}"] == 600
    assert metrics["detection_api_tak_connected"] == 1
    assert metrics["detection_api_accept_to_confirm_seconds_count"] == 600
    assert metrics["detection_queue_depth{queue=tak}"] == 0
    assert metrics["detection_api_dead_letters_waiting"] == 0
    assert metrics["detection_api_forwarder_batch_size_sum"] == 600
    assert time.time() - metrics["detection_api_forwarder_last_heartbeat_timestamp_seconds"] < 10

    # rq's own tooling sees the forwarder as a worker of queue tak.
    info = subprocess.run(
        [str(Path(sys.executable).parent / "rq"), "info", "-W", "-R", "-u", redis_server.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "tak-forwarder." in info.stdout


def test_a_batch_is_confirmed_only_after_the_pong(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    worker = start_worker(taky_tls.client_env(), TAK_CONFIRM_TIMEOUT_SECONDS="30")
    wait_connected(worker)
    with frozen(taky_tls):
        items = enqueue(redis, 5)
        # Written to the socket (sendall succeeded), but the server has not answered.
        wait_until(lambda: states(redis, items) == {"sent": 5}, 10, what="records sent")
        time.sleep(1.0)  # a window in which a send()-counts-as-delivered bug would confirm
        assert states(redis, items) == {"sent": 5}
        assert all(redis.exists(f"rq:job:{i.record_id}") for i in items)
        assert leftover_claims(redis) == 5
        assert worker.delivered("confirmed") == 0
    wait_until(lambda: states(redis, items) == {"confirmed": 5}, 20, what="confirmation")
    tak_subscriber.wait_for_uids([i.uid for i in items], timeout=10)
    assert leftover_claims(redis) == 0


def test_plain_tcp(
    redis_server: RedisServer,
    taky_tcp: TakyServer,
    tak_subscriber_factory: Callable[..., TakSubscriber],
    start_worker: StartWorker,
) -> None:
    subscriber = tak_subscriber_factory(taky_tcp)
    redis = redis_server.client()
    start_worker(taky_tcp.client_env())
    items = enqueue(redis, 200)
    subscriber.wait_for_uids([i.uid for i in items], timeout=30)
    wait_until(lambda: states(redis, items) == {"confirmed": 200}, 20, what="all confirmed")


def test_udp_is_best_effort_and_says_so(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        redis = redis_server.client()
        worker = start_worker({"TAK_URL": f"udp://127.0.0.1:{receiver.getsockname()[1]}"})
        items = enqueue(redis, 50)
        datagrams = [receiver.recv(65535) for _ in items]
    uids = {d.split(b'uid="', 1)[1].split(b'"', 1)[0].decode() for d in datagrams}
    assert uids == {i.uid for i in items}  # one event per datagram
    wait_until(lambda: states(redis, items) == {"sent": 50}, 10, what="records sent")
    # The counter is incremented after the records are written: wait for it, never read it once.
    wait_until(lambda: worker.delivered("sent_unconfirmed") == 50, 10, what="the sent counter")
    assert worker.delivered("confirmed") == 0
    assert "best effort" in worker.log()


# --- TLS failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["wrong_ca", "bad_client_cert", "hostname_mismatch"])
def test_tls_failures_are_reported_and_nothing_is_delivered(
    failure: str,
    redis_server: RedisServer,
    taky_factory: Callable[..., TakyServer],
    pki: PkiPaths,
    start_worker: StartWorker,
) -> None:
    if failure == "hostname_mismatch":
        taky = taky_factory(tls=True, server_cert=pki.wrong_host_server)
        env = taky.client_env()
        expected = "tls_hostname_mismatch"
    else:
        taky = taky_factory(tls=True)
        env = taky.client_env()
        if failure == "wrong_ca":
            env["TAK_TLS_CA"] = str(pki.wrong_ca.cert)
            expected = "tls_server_certificate"
        else:
            env["TAK_TLS_CERT"] = str(pki.wrong_ca_client.cert)
            env["TAK_TLS_KEY"] = str(pki.wrong_ca_client.key)
            expected = "tls_client_certificate"
    redis = redis_server.client()
    items = enqueue(redis, 5)
    worker = start_worker(env)
    worker.process.wait_until(
        lambda: worker.log().count(f"[{expected}]") >= 2, 20, what=f"two '{expected}' reports"
    )
    assert states(redis, items) == {"queued": 5}
    assert attempts(redis, items) == {0: 5}
    assert redis.llen("rq:queue:tak") == 5  # paused: nothing claimed while the server is down
    wait_until(lambda: worker.metric("detection_api_tak_connected") == 0, 10, what="disconnected")
    assert worker.delivered("confirmed") == 0


# --- dead letters --------------------------------------------------------------------------------


def test_newer_payload_version_is_dead_lettered_with_its_reason(
    redis_server: RedisServer, taky_tls: TakyServer, start_worker: StartWorker
) -> None:
    redis = redis_server.client()
    worker = start_worker(taky_tls.client_env())
    record_id = uuid.uuid4().hex
    enqueue_payload(
        redis,
        record_id,
        {"v": 99, "record_id": record_id, "cot": "<event/>", "accepted_at": time.time()},
    )
    late = enqueue(redis, 1, accepted_at=time.time() - RETENTION_SECONDS - 10)[0]
    good = enqueue(redis, 3)

    registry = FailedJobRegistry("tak", connection=redis, serializer=JSONSerializer)
    wait_until(lambda: len(registry) == 2, 20, what="two dead letters")
    wait_until(lambda: states(redis, good) == {"confirmed": 3}, 20, what="the rest delivered")
    newer = Job.fetch(record_id, connection=redis, serializer=JSONSerializer)
    assert newer.get_status() == "failed"
    assert "newer than this forwarder supports" in failure_text(newer)
    expired = Job.fetch(late.record_id, connection=redis, serializer=JSONSerializer)
    assert "retention exceeded" in failure_text(expired)
    record = RecordStore(redis, RETENTION_SECONDS).get(record_id)
    assert record is not None
    assert record["state"] == "dead"
    assert "newer than this forwarder supports" in record["last_error"]
    # Metrics follow the Redis writes: wait for them rather than read them once.
    wait_until(lambda: worker.metric("detection_api_dead_letters_waiting") == 2, 10, what="gauge")
    wait_until(lambda: worker.metric("detection_api_dead_letters_total") == 2, 10, what="total")
    wait_until(lambda: worker.delivered("dead") == 2, 10, what="dead deliveries")


def test_mixed_revisions_previous_and_current_payloads_are_both_delivered(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    """During a traffic split older revisions enqueue v1 (one event per job) and v2 (a request's
    events in one job, records with long field names) and the new one v3 (compact records). One
    forwarder delivers all three and updates each record in its own encoding; v4 is a dead
    letter."""
    redis = redis_server.client()
    old_id = uuid.uuid4().hex
    enqueue_payload(
        redis,
        old_id,
        {
            "v": 1,
            "record_id": old_id,
            "cot": detection_cot(old_id, f"v1-{old_id}"),
            "accepted_at": time.time(),
        },
    )
    v2_ids = [uuid.uuid4().hex for _ in range(3)]
    with redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        for record_id in v2_ids:  # as the previous revision wrote them
            pipe.hset(
                record_key(record_id),
                mapping={"id": record_id, "state": "queued", "attempts": "0", "created_at": "1.0"},
            )
        items = [{"record_id": r, "cot": detection_cot(r, f"v2-{r}")} for r in v2_ids]
        tak_queue(redis).enqueue_call(
            DELIVER_FUNC,
            kwargs={"v": 2, "accepted_at": time.time(), "deliveries": items},
            job_id=v2_ids[0],
            result_ttl=0,
            failure_ttl=None,
            ttl=None,
            pipeline=pipe,
        )
        pipe.execute()
    v3_ids = [uuid.uuid4().hex for _ in range(3)]
    store = RecordStore(redis, RETENTION_SECONDS)
    with redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        for record_id in v3_ids:
            store.write_new(pipe, record_id, {"state": DeliveryState.QUEUED.value})
        enqueue_deliveries(
            tak_queue(redis),
            pipe,
            [Delivery(r, detection_cot(r, f"v3-{r}"), time.time()) for r in v3_ids],
            per_job=100,
        )
        pipe.execute()
    assert tak_queue(redis).job_ids == [old_id, v2_ids[0], v3_ids[0]]  # 7 detections, 3 jobs
    future_id = uuid.uuid4().hex
    enqueue_payload(redis, future_id, {"v": 4, "accepted_at": time.time(), "events": []})

    start_worker(taky_tls.client_env())
    expected = {f"v1-{old_id}", *(f"v2-{r}" for r in v2_ids), *(f"v3-{r}" for r in v3_ids)}
    tak_subscriber.wait_for_uids(expected, timeout=30)
    confirmed = [Enqueued(r, "") for r in (old_id, *v2_ids, *v3_ids)]
    wait_until(lambda: states(redis, confirmed) == {"confirmed": 7}, 20, what="all confirmed")
    assert redis.hexists(record_key(v2_ids[0]), "confirmed_at")  # the previous encoding
    assert redis.hexists(record_key(v3_ids[0]), "ka")  # this revision's
    registry = FailedJobRegistry("tak", connection=redis, serializer=JSONSerializer)
    wait_until(lambda: future_id in registry.get_job_ids(), 20, what="v4 dead-lettered")
    future = Job.fetch(future_id, connection=redis, serializer=JSONSerializer)
    assert "payload version 4 is newer than this forwarder supports" in failure_text(future)


def test_attempts_exhausted_then_rq_requeue_delivers(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    """A live connection that stops answering costs attempts; out of attempts, a detection is a
    dead letter in rq's failed registry, and ``rq requeue`` sends it again."""
    redis = redis_server.client()
    worker = start_worker(
        taky_tls.client_env(), TAK_CONFIRM_TIMEOUT_SECONDS="1", MAX_DELIVERY_ATTEMPTS="1"
    )
    wait_connected(worker)
    with frozen(taky_tls):
        items = enqueue(redis, 3)
        wait_until(lambda: states(redis, items) == {"dead": 3}, 15, what="dead letters")
    registry = FailedJobRegistry("tak", connection=redis, serializer=JSONSerializer)
    assert sorted(registry.get_job_ids()) == sorted(i.record_id for i in items)
    record = RecordStore(redis, RETENTION_SECONDS).get(items[0].record_id)
    assert record is not None
    assert "no confirmation after 1 attempt" in record["last_error"]
    assert record["attempts"] == 1

    subprocess.run(
        [
            str(Path(sys.executable).parent / "rq"),
            "requeue",
            "--all",
            "--queue",
            "tak",
            "-S",
            "json",
            "-u",
            redis_server.url,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    wait_until(lambda: states(redis, items) == {"confirmed": 3}, 30, what="requeued delivery")
    tak_subscriber.wait_for_uids([i.uid for i in items], timeout=10)
    assert len(registry) == 0
    assert not list(redis.scan_iter("rq:job:*"))


def rq_info(redis_url: str) -> str:
    """``rq info`` itself (the real CLI), raw output."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rq"), "info", "--raw", "-u", redis_url, "tak"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout


def test_rq_info_shows_the_jobs_in_flight_and_the_forwarder_busy(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    """Claimed jobs sit in rq's started registry until confirmed, and the forwarder's rq worker
    is busy meanwhile: ``rq info`` (and rq-dashboard, which reads the same keys) tell the
    truth."""
    redis = redis_server.client()
    worker = start_worker(taky_tls.client_env(), TAK_CONFIRM_TIMEOUT_SECONDS="60")
    wait_connected(worker)
    assert " idle " in rq_info(redis_server.url)
    with frozen(taky_tls):  # the server reads nothing and answers nothing: the batch is held
        items = enqueue(redis, 3)
        wait_until(lambda: states(redis, items) == {"sent": 3}, 20, what="the batch written")
        held = rq_info(redis_server.url)
        assert "queue tak 0, 3 executing" in held
        assert " busy tak" in held
    wait_until(lambda: states(redis, items) == {"confirmed": 3}, 30, what="confirmed")
    tak_subscriber.wait_for_uids([i.uid for i in items], timeout=10)
    wait_until(lambda: " idle " in rq_info(redis_server.url), 10, what="idle again", interval=0.5)
    assert "queue tak 0, 0 executing" in rq_info(redis_server.url)


# --- the slow path: a plain rq worker --------------------------------------------------------


def test_a_plain_rq_worker_delivers_with_the_same_confirmation(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
) -> None:
    """``rq worker tak`` (forking) runs ``deliver_cot`` one job at a time: each work-horse opens
    its own connection and returns only after the pong."""
    redis = redis_server.client()
    items = enqueue(redis, 3)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "rq"),
            "worker",
            "--burst",
            "-S",
            "json",
            "-u",
            redis_server.url,
            "tak",
        ],
        env={**os.environ, "REDIS_URL": redis_server.url, **taky_tls.client_env()},
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert states(redis, items) == {"confirmed": 3}
    tak_subscriber.wait_for_uids([i.uid for i in items], timeout=10)


# --- liveness --------------------------------------------------------------------------------


def test_health_is_503_when_the_main_loop_stops_beating() -> None:
    metrics = ForwarderMetrics(heartbeat_max_age_seconds=0.3)
    server = MetricsServer(metrics, 0, host="127.0.0.1").start()
    try:
        url = f"http://127.0.0.1:{server.port}/health"
        assert http_ok(url)
        wait_until(lambda: http_ok(url, status=503), 5, what="a stale heartbeat")
        metrics.heartbeat.beat()
        assert http_ok(url)
        assert http_ok(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
