"""The notifier: a thread of each forwarder process posting rq's ``notify`` jobs to Discord.

It claims job ids (``ClaimLedger``, group ``notifier``), gathers more for ``coalesce_seconds`` and
posts them as one message once it holds a slot of the rate limit all notifiers share (send times in
a sorted set, Redis' clock). No slot, 429, 5xx or no answer: the ids go back to the queue front and
nothing is claimed until the wait is over, so what waits coalesces. Other answers fail the jobs."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from rq.serializers import JSONSerializer

from detection_api.alerts.messages import build_message
from detection_api.alerts.notify import NOTIFY_FUNC, NotificationPayload, parse_notification
from detection_api.alerts.webhook import WebhookClient, WebhookOutcome, scrub
from detection_api.backoff import Backoff
from detection_api.store.claims import ClaimLedger
from detection_api.store.tak_jobs import (
    NOTIFY_QUEUE_NAME,
    PayloadRejected,
    dead_letter,
    read_job_calls,
)

log = logging.getLogger(__name__)

QUEUE_KEY = f"rq:queue:{NOTIFY_QUEUE_NAME}"
SENT_KEY = "detection:notifier:sent"  # zset: one member per post of the rate window
MAX_JOBS_PER_MESSAGE = 1000
ALIVE_TTL_SECONDS = 30.0  # must exceed the longest step (a 10 s POST)

# KEYS: sent. ARGV: limit, window seconds, member. 0: a slot is taken; else ms until one frees.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit, window = tonumber(ARGV[1]), math.ceil(ARGV[2] * 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
return math.max(1, redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')[2] + window - now)
"""


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    webhook_url: str | None = field(default=None, repr=False)  # holds a token: never printed
    max_per_minute: int = 20
    rate_window_seconds: float = 60.0  # the "minute" (tests shorten it)
    coalesce_seconds: float = 1.0  # gather a burst this long after its first notification
    request_timeout_seconds: float = 10.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    claim_block_seconds: float = 1.0


class Notifier:
    def __init__(self, redis: Redis, config: NotifierConfig, *, name: str | None = None) -> None:
        self.redis, self.config, self._url = redis, config, config.webhook_url
        self.name = name or f"notifier.{socket.gethostname()}.{uuid.uuid4().hex[:8]}"
        self.ledger = ClaimLedger(redis, QUEUE_KEY, self.name, ALIVE_TTL_SECONDS, group="notifier")
        self._take_slot = redis.register_script(_TAKE_SLOT)
        self._webhook_backoff = Backoff(config.retry_base_seconds, config.retry_max_seconds)
        self._redis_backoff = Backoff(0.5, 30.0)
        self._not_before = 0.0  # time.monotonic(): nothing is claimed before
        self._return_claims = True  # at start and after an error: own claims back to the queue

    def run(self, stop: threading.Event) -> None:
        """Post notifications until ``stop`` is set. Never raises."""
        if not self._url:
            log.info("DISCORD_WEBHOOK_URL is not set: Discord notifications are off")
            stop.wait()
            return
        webhook = WebhookClient(self._url, self.config.request_timeout_seconds)
        log.info("notifier %s: queue %s -> %s", self.name, NOTIFY_QUEUE_NAME, webhook.redacted)
        while not stop.is_set():
            try:
                self._step(stop, webhook)
                self._redis_backoff.reset()
            except Exception as exc:  # Redis down, or a bug: never end notifications for good
                self._return_claims = True
                what = "Redis unavailable" if isinstance(exc, RedisError) else "notifier error"
                detail = scrub(f"{type(exc).__name__}: {exc}", self._url)[:300]
                delay = self._redis_backoff.next_delay()
                log.error("%s for notifications (%s); retrying in %.1f s", what, detail, delay)
                stop.wait(delay)
        with contextlib.suppress(RedisError):  # else others return the claims
            self.ledger.retire()

    def _step(self, stop: threading.Event, webhook: WebhookClient) -> None:
        self.ledger.refresh_alive()
        if self._return_claims:
            self.ledger.requeue_inflight()
            self._return_claims = False
        self.ledger.reap_dead_forwarders()
        wait = self._not_before - time.monotonic()
        if wait > 0:  # nothing is claimed while we may not post: it coalesces in the queue
            stop.wait(min(wait, max(self.config.claim_block_seconds, 1.0)))
            return
        ids = self.ledger.claim(MAX_JOBS_PER_MESSAGE, self.config.claim_block_seconds)
        if not ids or stop.wait(self.config.coalesce_seconds):
            self.ledger.requeue(ids)
            return
        if len(ids) < MAX_JOBS_PER_MESSAGE:
            ids += self.ledger.claim(MAX_JOBS_PER_MESSAGE - len(ids), 0)
        if wait := self.take_slot():
            self.ledger.requeue(ids)
            self._not_before = time.monotonic() + wait
        else:
            self._post(self._read(ids), webhook)

    def take_slot(self) -> float:
        """A post of the shared rate limit: 0.0 if taken, else the seconds until one frees."""
        args = [self.config.max_per_minute, self.config.rate_window_seconds, uuid.uuid4().hex]
        return int(self._take_slot([SENT_KEY], args)) / 1000

    def _post(self, notifications: dict[str, NotificationPayload], webhook: WebhookClient) -> None:
        if not (ids := list(notifications)):  # every claimed job failed
            return
        result = webhook.post(build_message(list(notifications.values())))
        if result.outcome == WebhookOutcome.DELIVERED:
            self._webhook_backoff.reset()
            self.ledger.release_delivered(self.redis, ids)
            log.info("posted a Discord message for %d notification(s)", len(notifications))
            return
        wait = result.retry_after or 0.0
        if result.outcome != WebhookOutcome.RATE_LIMITED:
            wait = max(wait, self._webhook_backoff.next_delay())
        self._not_before = time.monotonic() + wait
        if result.outcome == WebhookOutcome.REJECTED:
            reason = f"Discord webhook {webhook.redacted} rejected the message: {result.detail}"
            log.error("%s; %d notification(s) failed, next post in %.1f s", reason, len(ids), wait)
            self._fail(dict.fromkeys(ids, reason))
            return
        self.ledger.requeue(ids)
        what = f"Discord webhook {webhook.redacted} unavailable ({result.detail})"
        log.warning("%s; %d notification(s) kept, next post in %.1f s", what, len(ids), wait)

    def _read(self, ids: list[str]) -> dict[str, NotificationPayload]:
        """The claimed jobs' notifications by job id; those that can never be posted fail now."""
        notifications: dict[str, NotificationPayload] = {}
        rejected: dict[str, str] = {}
        for job_id, call in zip(ids, read_job_calls(self.redis, ids), strict=True):
            try:
                if call is None:
                    raise ValueError("gone (posted after its claim was taken back)")
                if isinstance(call, PayloadRejected):
                    raise call
                if call.func_name != NOTIFY_FUNC:
                    raise ValueError(f"job runs {call.func_name!r}, not {NOTIFY_FUNC}")
                notifications[job_id] = parse_notification(call.kwargs)
            except (PayloadRejected, ValueError) as exc:
                log.error("notification %s cannot be posted: %s", job_id, exc)
                rejected[job_id] = str(exc)
        if rejected:
            self._fail(rejected)
        return notifications

    def _fail(self, reasons: dict[str, str]) -> None:
        """Jobs into rq's failed registry with their reason (requeue-able), their claims dropped,
        in one transaction (a job that is gone: only its claim)."""
        jobs = Job.fetch_many(list(reasons), self.redis, serializer=JSONSerializer)
        with self.redis.pipeline(transaction=True) as pipe:
            for reason, job in zip(reasons.values(), jobs, strict=True):
                if job is not None:
                    dead_letter(job, scrub(reason, self._url), pipe)
            self.ledger.forget(pipe, list(reasons))
            pipe.execute()
