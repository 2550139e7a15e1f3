"""The notifier against a real Redis and a local HTTP receiver standing in for Discord.

The receiver (``http.server`` on a free 127.0.0.1 port, in a thread) records every request and
answers from a script (204 by default; 429 with retry_after, 500, 404 on demand). The notifier runs
as it does in the forwarder process: a background thread, ``Notifier(...).run(stop_event)``.
Every wait has a deadline; every thread and server is stopped at teardown, also on failure.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from detection_api.alerts.notifier import QUEUE_KEY, Notifier, NotifierConfig
from detection_api.alerts.notify import (
    NOTIFY_FUNC,
    detection_alert_payload,
    enqueue_notification,
    notify_queue,
    tak_disconnected_payload,
    tak_reconnected_payload,
)
from detection_api.alerts.webhook import WebhookClient, WebhookOutcome
from detection_api.local.procs import wait_until
from detection_api.settings import Settings
from detection_api.store.claims import ClaimLedger
from detection_api.store.tak_jobs import NOTIFY_QUEUE_NAME

TOKEN = "Zq9-webhook_SECRET_token_4f1c2b7e9d"
WEBHOOK_PATH = f"/api/webhooks/112233445566778899/{TOKEN}"


# --- the stand-in for Discord --------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 204
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float  # time.monotonic()
    status: int  # what the receiver answered


class WebhookReceiver:
    """Records POSTs; answers with scripted replies in order, then ``default``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: list[Reply] = []
        self.default = Reply(204)
        self.requests: list[Received] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.pop(0) if self._script else self.default

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                reply = receiver._next_reply()
                receiver._record(
                    Received(
                        self.path,
                        dict(self.headers.items()),
                        json.loads(raw),
                        time.monotonic(),
                        reply.status,
                    )
                )
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[Received]:
        wait_until(lambda: self.count >= count, timeout, what=f"{count} webhook request(s)")
        with self._lock:
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: Any) -> Redis:
    return redis_server.client(socket_timeout=10)


@pytest.fixture
def secret_free_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Captures every log record of the test and fails it if one contains the webhook token."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    leaks = [r.getMessage() for r in caplog.records if TOKEN in r.getMessage() + (r.exc_text or "")]
    assert not leaks, f"webhook token in logs: {leaks[:3]}"


@pytest.fixture
def start_notifier(
    redis_client: Redis, receiver: WebhookReceiver, secret_free_logs: pytest.LogCaptureFixture
) -> Iterator[Callable[..., Notifier]]:
    """Starts notifier threads (fast test timings unless overridden); stops them all at teardown."""
    running: list[tuple[Notifier, threading.Event, threading.Thread]] = []

    def start(**overrides: Any) -> Notifier:
        options: dict[str, Any] = {
            "webhook_url": receiver.url,
            "max_per_minute": 100,
            "coalesce_seconds": 0.3,
            "request_timeout_seconds": 2.0,
            "retry_base_seconds": 0.2,
            "retry_max_seconds": 1.0,
            "claim_block_seconds": 0.2,
        }
        options.update(overrides)
        notifier = Notifier(redis_client, NotifierConfig(**options))
        stop = threading.Event()
        thread = threading.Thread(target=notifier.run, args=(stop,), name=notifier.name)
        running.append((notifier, stop, thread))
        thread.start()
        return notifier

    yield start
    for _notifier, stop, _thread in running:
        stop.set()
    for notifier, _stop, thread in running:
        thread.join(timeout=15)
        assert not thread.is_alive(), f"notifier {notifier.name} did not stop"


# --- helpers -----------------------------------------------------------------------------------


def _settings(url: str | None) -> Settings:
    return Settings(discord_webhook_url=url)


def _alert_payload(i: int, object_class: str = "person", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "record_id": f"rec{i:04d}",
        "object_class": object_class,
        "confidence": 0.912,
        "lat": 48.1372184,
        "lon": 11.5754923,
        "ce90_m": 14.271,
        "flag": "GREEN",
        "camera_id": "cam-7",
        "timestamp": "2024-05-01T12:00:00Z",
    }
    fields.update(overrides)
    return detection_alert_payload(**fields)


def enqueue(redis: Redis, url: str, kind: str, payload: dict[str, Any]) -> None:
    """As ingest does it: inside a MULTI pipeline together with the caller's own writes."""
    queue = notify_queue(redis, _settings(url))
    with redis.pipeline(transaction=True) as pipe:
        pipe.multi()  # as ingest does after its WATCH; rq wants MULTI before the caller's writes
        pipe.set(f"test:record:{payload.get('record_id', kind)}", "stored")
        enqueue_notification(queue, kind, payload, pipeline=pipe)
        pipe.execute()


def alerts_in(message: dict[str, Any]) -> int:
    """Detections a message accounts for: one embed each, plus the "N more" summary."""
    count = 0
    for embed in message["embeds"]:
        if embed.get("footer", {}).get("text", "").startswith("record "):
            count += 1
        more = re.fullmatch(r"(\d+) more detection alerts?", embed["title"])
        if more:
            count += int(more.group(1))
    return count


def pending(redis: Redis) -> int:
    """Queued or claimed by a notifier (its in-flight list)."""
    claimed = sum(redis.llen(k) for k in redis.scan_iter(match="detection:notifier:*:inflight"))
    return int(redis.llen(QUEUE_KEY)) + int(claimed)


def job_keys(redis: Redis) -> list[bytes]:
    return list(redis.scan_iter(match="rq:job:*"))


# --- tests -------------------------------------------------------------------------------------


def test_an_alert_becomes_one_webhook_message(redis_client, receiver, start_notifier):
    start_notifier()
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(1, confidence=0.934))

    (request,) = receiver.wait_for_requests(1)
    assert request.path == WEBHOOK_PATH
    assert request.headers["Content-Type"] == "application/json"
    assert "Python-urllib" not in request.headers["User-Agent"]
    (embed,) = request.body["embeds"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Class"] == "person"
    assert fields["Confidence"] == "93.4%"
    assert fields["Position"] == "48.1372184, 11.5754923"
    assert fields["CE90"] == "14.3 m (GREEN)"
    assert embed["url"] == (
        "https://www.openstreetmap.org/?mlat=48.1372184&mlon=11.5754923"
        "#map=17/48.1372184/11.5754923"
    )
    assert embed["color"] == 0x2ECC71
    assert request.body["allowed_mentions"] == {"parse": []}
    # Posted means done: nothing queued, claimed or kept.
    wait_until(lambda: pending(redis_client) == 0 and not job_keys(redis_client), 5, what="done")
    assert redis_client.get("test:record:rec0001") == b"stored"


def test_a_burst_is_coalesced_and_rate_limited_and_nothing_is_lost(
    redis_client, receiver, start_notifier
):
    start_notifier(max_per_minute=2)  # the real one-minute window
    for i in range(50):  # 50 separate ingests, as a burst of requests would make them
        enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(i, "vehicle"))

    def accounted() -> int:
        return sum(alerts_in(r.body) for r in receiver.delivered())

    wait_until(lambda: accounted() == 50, 15, what="all 50 alerts in messages")
    assert receiver.count <= 2
    assert all(alerts_in(r.body) >= 1 for r in receiver.requests)

    enqueued = 50
    if receiver.count == 1:  # the whole burst fitted in one message: use the minute's second one
        enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(50, "vehicle"))
        enqueued += 1
        receiver.wait_for_requests(2)
        wait_until(lambda: pending(redis_client) == 0, 5, what="the second message done")

    # Both messages of the minute are used: more alerts wait in the queue, none is lost.
    for i in range(100, 120):
        enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(i, "vehicle"))
    enqueued += 20
    deadline = time.monotonic() + 2.0  # several coalescing windows: no third message in the minute
    while time.monotonic() < deadline:
        assert receiver.count == 2
        time.sleep(0.1)
    assert pending(redis_client) == 20
    assert accounted() + pending(redis_client) == enqueued  # counts add up
    assert len(job_keys(redis_client)) == pending(redis_client)


def test_queued_alerts_coalesce_into_the_next_allowed_message(
    redis_client, receiver, start_notifier
):
    start_notifier(max_per_minute=1, rate_window_seconds=1.5)
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(0))
    receiver.wait_for_requests(1)
    for i in range(1, 31):
        enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(i, "vehicle"))

    first, second = receiver.wait_for_requests(2, timeout=10)
    assert second.at - first.at >= 1.4  # the window was respected
    assert alerts_in(first.body) == 1
    assert alerts_in(second.body) == 30  # everything that waited, in one message
    assert "30 detection alerts" in second.body["content"]
    assert len(second.body["embeds"]) == 10


def test_discord_429_is_honoured(redis_client, receiver, start_notifier):
    receiver.script(
        Reply(429, {"message": "You are being rate limited.", "retry_after": 1.2, "global": False})
    )
    start_notifier()
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(1))

    limited, posted = receiver.wait_for_requests(2, timeout=10)
    assert limited.status == 429
    assert posted.status == 204
    assert posted.at - limited.at >= 1.1
    assert alerts_in(posted.body) == 1
    wait_until(lambda: pending(redis_client) == 0, 5, what="the job done")


def test_retry_after_header_is_honoured_when_the_body_has_none(
    redis_client, receiver, start_notifier
):
    receiver.script(Reply(429, None, {"Retry-After": "1"}))
    start_notifier()
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(1))
    limited, posted = receiver.wait_for_requests(2, timeout=10)
    assert posted.at - limited.at >= 0.9


def test_server_errors_are_retried_with_backoff_then_delivered(
    redis_client, receiver, start_notifier, secret_free_logs
):
    receiver.script(Reply(500, {"message": "oops"}), Reply(502), Reply(503))
    start_notifier(retry_base_seconds=0.2, retry_max_seconds=0.5)
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(1))
    enqueue(redis_client, receiver.url, "dead_letter", {"record_id": "r9", "reason": "expired"})

    requests = receiver.wait_for_requests(4, timeout=15)
    assert [r.status for r in requests] == [500, 502, 503, 204]
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert gaps[0] >= 0.18
    assert gaps[1] >= 0.38  # doubled
    assert gaps[2] >= 0.45  # capped at 0.5
    assert requests[-1].body == requests[0].body  # the same message, nothing dropped
    assert alerts_in(requests[-1].body) == 1
    assert "1 dead letter" in requests[-1].body["content"]
    wait_until(lambda: pending(redis_client) == 0, 5, what="the jobs done")
    assert any("unavailable" in r.getMessage() for r in secret_free_logs.records)


def test_a_rejected_webhook_fails_the_jobs_with_a_reason(
    redis_client, receiver, start_notifier, secret_free_logs
):
    receiver.script(Reply(404, {"message": "Unknown Webhook", "code": 10015}))
    start_notifier(retry_base_seconds=2.0, retry_max_seconds=2.0)  # waits 1-2 s (jitter)
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(1))
    failed = FailedJobRegistry(NOTIFY_QUEUE_NAME, connection=redis_client)
    wait_until(lambda: failed.count == 1, 10, what="the job in the failed registry")

    (job_id,) = failed.get_job_ids()
    job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
    result = job.latest_result()
    assert result is not None
    assert "HTTP 404: Unknown Webhook" in result.exc_string
    assert TOKEN not in result.exc_string
    assert pending(redis_client) == 0

    # Not retried: the next notification is a message of its own, after a backoff (a deleted
    # webhook is not hit once per coalescing window).
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(2))
    first, second = receiver.wait_for_requests(2)
    assert first.status == 404
    assert second.status == 204
    assert second.at - first.at >= 0.9
    assert second.body["embeds"][0]["footer"]["text"] == "record rec0002"
    messages = [r.getMessage() for r in secret_free_logs.records]
    assert any("rejected" in m and "HTTP 404" in m for m in messages)

    # Requeue-able once the webhook is fixed, like every dead letter.
    failed.requeue(job_id)
    third = receiver.wait_for_requests(3)[2]
    assert third.body["embeds"][0]["footer"]["text"] == "record rec0001"


def test_receiver_down_keeps_the_jobs_until_it_is_back(
    redis_client, receiver, start_notifier, secret_free_logs
):
    receiver.stop()  # the port is now refused
    start_notifier(retry_base_seconds=0.2, retry_max_seconds=0.5)
    for i in range(3):
        enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(i))

    def refused_twice() -> bool:
        return sum("no answer" in r.getMessage() for r in secret_free_logs.records) >= 2

    wait_until(refused_twice, 10, what="two failed attempts")
    assert pending(redis_client) == 3  # kept, not failed
    assert FailedJobRegistry(NOTIFY_QUEUE_NAME, connection=redis_client).count == 0

    receiver.start()  # same port again
    (request,) = receiver.wait_for_requests(1, timeout=10)
    assert alerts_in(request.body) == 3
    wait_until(lambda: pending(redis_client) == 0, 5, what="the jobs done")


def test_the_webhook_url_never_reaches_logs_or_reasons(
    redis_client, receiver, start_notifier, secret_free_logs
):
    receiver.script(
        Reply(500, {"message": f"internal error at {receiver.url}"}),
        Reply(429, {"retry_after": 0.2, "message": receiver.url}),
        Reply(403, {"message": f"no access to {receiver.url}"}),
    )
    start_notifier()
    enqueue(redis_client, receiver.url, "tak_disconnected", _disconnected_payload())
    failed = FailedJobRegistry(NOTIFY_QUEUE_NAME, connection=redis_client)
    wait_until(lambda: failed.count == 1, 10, what="the job failed")

    job = Job.fetch(failed.get_job_ids()[0], connection=redis_client, serializer=JSONSerializer)
    reason = job.latest_result().exc_string
    assert "HTTP 403" in reason
    assert TOKEN not in reason
    assert WEBHOOK_PATH not in reason
    text = "\n".join(r.getMessage() for r in secret_free_logs.records)
    assert "HTTP 500" in text
    assert "HTTP 429" in text
    assert TOKEN not in text
    assert "127.0.0.1" in text  # the host is named, only the path is secret
    # The secret_free_logs fixture checks every record once more at teardown.


def _disconnected_payload(endpoint: str = "tak.example:8089", since: float = 1.7e9) -> dict:
    return tak_disconnected_payload(
        endpoint=endpoint, down_seconds=75.0, since=since, error="connection refused"
    )


def test_one_message_per_tak_outage(redis_client, receiver, start_notifier):
    start_notifier()
    enqueue(redis_client, receiver.url, "tak_disconnected", _disconnected_payload())
    (down,) = receiver.wait_for_requests(1)
    assert down.body["embeds"][0]["title"] == "TAK server disconnected"
    assert "tak.example:8089" in down.body["embeds"][0]["description"]

    # The same outage reported again (a restarted forwarder, reconnect attempts): dropped.
    for since in (1.7e9, 1.7e9 + 30):
        enqueue(redis_client, receiver.url, "tak_disconnected", _disconnected_payload(since=since))
    wait_until(
        lambda: pending(redis_client) == 0 and not job_keys(redis_client), 5, what="duplicates"
    )
    assert receiver.count == 1

    back = tak_reconnected_payload(endpoint="tak.example:8089", down_seconds=300)
    enqueue(redis_client, receiver.url, "tak_reconnected", back)
    up = receiver.wait_for_requests(2)[1]
    assert up.body["embeds"][0]["title"] == "TAK server reconnected"
    assert "5 min 0 s" in up.body["embeds"][0]["description"]

    # A second reconnect has no outage to close; a new outage is announced again.
    enqueue(redis_client, receiver.url, "tak_reconnected", back)
    enqueue(redis_client, receiver.url, "tak_disconnected", _disconnected_payload(since=1.8e9))
    again = receiver.wait_for_requests(3)[2]
    assert [e["title"] for e in again.body["embeds"]] == ["TAK server disconnected"]
    wait_until(lambda: pending(redis_client) == 0, 5, what="all done")
    assert receiver.count == 3


def test_an_unrenderable_job_fails_alone(redis_client, receiver, start_notifier):
    queue = Queue(NOTIFY_QUEUE_NAME, connection=redis_client, serializer=JSONSerializer)
    queue.enqueue_call(NOTIFY_FUNC, kwargs={"v": 1, "kind": "weather", "payload": {}})
    queue.enqueue_call("os.system", kwargs={"command": "true"})
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(1))
    start_notifier()

    (request,) = receiver.wait_for_requests(1)
    assert alerts_in(request.body) == 1
    failed = FailedJobRegistry(NOTIFY_QUEUE_NAME, connection=redis_client)
    wait_until(lambda: failed.count == 2, 5, what="two failed jobs")
    reasons = sorted(
        Job.fetch(i, connection=redis_client, serializer=JSONSerializer).latest_result().exc_string
        for i in failed.get_job_ids()
    )
    assert "unknown notification kind 'weather'" in reasons[1]
    assert "job runs 'os.system'" in reasons[0]


def test_claims_of_a_dead_notifier_are_recovered(redis_client, receiver, start_notifier):
    for i in range(3):
        enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(i))
    # A notifier that claimed everything and was SIGKILLed: its alive key expires, claims stay.
    dead = ClaimLedger(redis_client, QUEUE_KEY, "notifier.dead", 1.0, group="notifier")
    assert len(dead.claim(10, block_seconds=0)) == 3
    assert redis_client.llen(QUEUE_KEY) == 0

    start_notifier()
    (request,) = receiver.wait_for_requests(1, timeout=10)
    assert alerts_in(request.body) == 3
    wait_until(lambda: pending(redis_client) == 0, 5, what="recovered jobs done")


def test_two_notifiers_share_one_rate_limit(redis_client, receiver, start_notifier):
    for _ in range(2):
        start_notifier(max_per_minute=1)
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(0))
    receiver.wait_for_requests(1)
    for i in range(1, 6):
        enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(i))
    deadline = time.monotonic() + 1.5  # several coalescing windows of both notifiers
    while time.monotonic() < deadline:
        assert receiver.count == 1
        time.sleep(0.1)
    assert pending(redis_client) == 5


def test_without_a_webhook_nothing_is_enqueued_and_the_notifier_idles(
    redis_client, secret_free_logs
):
    queue = notify_queue(redis_client, _settings(None))
    assert queue is None
    enqueue_notification(queue, "detection_alert", _alert_payload(1))
    assert redis_client.llen(QUEUE_KEY) == 0

    # A job enqueued by a revision that had the URL stays for when it comes back.
    enqueue(redis_client, "http://127.0.0.1:9/x", "detection_alert", _alert_payload(2))
    notifier = Notifier(redis_client, NotifierConfig(webhook_url=None))
    stop = threading.Event()
    thread = threading.Thread(target=notifier.run, args=(stop,))
    thread.start()
    try:
        wait_until(
            lambda: any(
                "notifications are off" in r.getMessage() for r in secret_free_logs.records
            ),
            5,
            what="the notifications-off log line",
        )
        assert thread.is_alive()  # idles until stopped
        assert redis_client.llen(QUEUE_KEY) == 1
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    offs = [r for r in secret_free_logs.records if "notifications are off" in r.getMessage()]
    assert len(offs) == 1


def test_a_webhook_that_never_answers_is_a_retryable_timeout():
    with socket.socket() as silent:  # listens, never accepts: the request is sent, no answer
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}{WEBHOOK_PATH}"
        started = time.monotonic()
        result = WebhookClient(url, timeout=0.5).post({"content": "hello"})
    assert result.outcome is WebhookOutcome.RETRY
    assert result.status is None
    assert time.monotonic() - started < 5
    assert TOKEN not in result.detail


def test_redirects_are_not_followed(receiver):
    """A redirect could carry the token to another host: it is a rejected webhook."""
    receiver.script(Reply(307, None, {"Location": f"http://127.0.0.1:9{WEBHOOK_PATH}"}))
    result = WebhookClient(receiver.url, timeout=2).post({"content": "hello"})
    assert result.outcome is WebhookOutcome.REJECTED
    assert result.status == 307
    assert receiver.count == 1


def test_the_notifier_survives_a_redis_outage(
    redis_server, redis_client, receiver, start_notifier, secret_free_logs
):
    start_notifier()
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(1))
    receiver.wait_for_requests(1)
    # Posted is not yet done: killing Redis before the job is released would (rightly) post it
    # again after the restart, at least once.
    wait_until(lambda: pending(redis_client) == 0, 5, what="the first job done")

    redis_server.kill()  # SIGKILL: the notifier's next Redis call fails

    def logged_outage() -> bool:
        return any("Redis unavailable" in r.getMessage() for r in secret_free_logs.records)

    wait_until(logged_outage, 10, what="the notifier noticing the outage")
    redis_server.restart()
    enqueue(redis_client, receiver.url, "detection_alert", _alert_payload(2))
    second = receiver.wait_for_requests(2, timeout=20)[1]
    assert second.body["embeds"][0]["footer"]["text"] == "record rec0002"
