"""Fault injection through the whole product: a producer keeps posting detections to the real
function while the forwarder is SIGKILLed at random instants, or the TAK connection is cut
mid-write by a loopback proxy. Witness: a TAK subscriber on taky (mutual TLS) counting distinct
uids. Every acknowledged (201) detection must arrive: 0 lost; duplicates are counted and reported;
an outage dead-letters nothing and burns no attempts.
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from product import start_forwarder, start_function
from rq.registry import FailedJobRegistry
from tcp_proxy import CuttingProxy
from test_function_http import detection

from detection_api.local.procs import wait_until

SEED = 20261127


class Producer:
    """Posts detections back to back (about 100/s) and keeps the uids of the acknowledged ones."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: dict[str, str] = {}  # uid -> record id
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import http.client

        body = json.dumps(detection()).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        host, port = self.url.removeprefix("http://").split(":")
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request("POST", "/api/v1/detections", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                if response.status == 201:
                    outcome = json.loads(payload)
                    self.acknowledged[outcome["uid"]] = outcome["id"]
                else:
                    self.failures += 1
            except OSError:
                self.failures += 1
            finally:
                conn.close()
            self._stop.wait(0.01)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def keep_going_until(self, count: int) -> None:
        """Keep the stream flowing past the faults until ``count`` detections were acknowledged
        (a slow, shared machine posts fewer per second)."""
        wait_until(lambda: len(self.acknowledged) >= count, 120, what=f"{count} acknowledged")


@pytest.fixture
def function_url(redis_server, start_process) -> str:
    return start_function(start_process, {"REDIS_URL": redis_server.url, "AUTH_DISABLED": "true"})


def start_worker(start_process, redis_server, tak_env: dict[str, str], name: str):
    env = {"REDIS_URL": redis_server.url, **tak_env, "TAK_RECONNECT_MAX_SECONDS": "1"}
    return start_forwarder(start_process, env, name)[0]


def assert_all_delivered(producer: Producer, subscriber, redis, what: str) -> None:
    subscriber.wait_for_uids(set(producer.acknowledged), timeout=90)
    counts = subscriber.uid_counts()
    duplicates = sum(n - 1 for uid, n in counts.items() if uid in producer.acknowledged and n > 1)
    lost = set(producer.acknowledged) - set(counts)
    print(
        f"\n{what}: {len(producer.acknowledged)} acknowledged, {len(lost)} lost, "
        f"{duplicates} duplicate deliveries"
    )
    assert not lost
    assert len(FailedJobRegistry("tak", connection=redis)) == 0  # no outage dead-letters


def test_forwarder_sigkilled_at_random_instants(
    redis_server, taky_tls, tak_subscriber, start_process, function_url
):
    rng = random.Random(SEED)
    redis = redis_server.client()
    worker = start_worker(start_process, redis_server, taky_tls.client_env(), "forwarder-0")
    with Producer(function_url) as producer:
        for kill in range(1, 4):
            time.sleep(rng.uniform(0.3, 1.5))  # the fault's instant, not a wait for a condition
            worker.kill()
            worker = start_worker(
                start_process, redis_server, taky_tls.client_env(), f"forwarder-{kill}"
            )
        producer.keep_going_until(200)
    assert_all_delivered(producer, tak_subscriber, redis, "3 forwarder SIGKILLs")
    wait_until(
        lambda: not any(redis.llen(k) for k in redis.keys("detection:forwarder:*:inflight")),
        30,
        what="no claim left behind",
    )


def test_tak_connection_cut_mid_write_by_a_proxy(
    redis_server, taky_tls, tak_subscriber, start_process, function_url
):
    rng = random.Random(SEED + 1)
    redis = redis_server.client()
    proxy = CuttingProxy(taky_tls.port).start()
    try:
        env = {**taky_tls.client_env(), "TAK_URL": f"tls://127.0.0.1:{proxy.port}"}
        start_worker(start_process, redis_server, env, "forwarder")
        with Producer(function_url) as producer:
            for _ in range(5):
                wait_until(lambda: proxy.connections > 0, 30, what="a forwarder connection")
                # Cut while bytes flow: after some upstream traffic since the last cut.
                sent = proxy.bytes_up
                wait_until(lambda s=sent: proxy.bytes_up > s, 30, what="traffic to cut")
                time.sleep(rng.uniform(0.0, 0.3))
                proxy.cut()
            producer.keep_going_until(200)
        assert proxy.cuts >= 5
        assert_all_delivered(producer, tak_subscriber, redis, f"{proxy.cuts} connection cuts")
        with redis.pipeline(transaction=False) as pipe:
            for record_id in producer.acknowledged.values():
                pipe.hget(f"detection:record:{record_id}", "attempts")
            attempts = [int(a or 0) for a in pipe.execute()]
        assert max(attempts) == 0  # a reset is an outage: no attempt burned
    finally:
        proxy.stop()
