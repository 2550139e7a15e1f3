"""The notifier: a thread of each forwarder process posting rq's ``notify`` jobs to Discord.

Each step claims job ids (``ClaimLedger``, group ``notifier``: a dead notifier's claims go back to
the queue front), gathers more for ``coalesce_seconds``, takes a slot of the rate limit all
notifiers share (send times in a sorted set, Redis' clock) and posts one message. No slot, 429, 5xx
or no answer: the ids go back and nothing is claimed before the wait (retry_after, backoff) is
over, so what waits coalesces. Other answers fail the jobs into rq's failed registry."""

from __future__ import annotations

import logging
import os
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
from detection_api.alerts.notify import NOTIFY_FUNC, Notification, parse_notification
from detection_api.alerts.webhook import Outcome, WebhookClient, scrub
from detection_api.backoff import Backoff
from detection_api.settings import Settings, secret
from detection_api.store.claims import ClaimLedger
from detection_api.store.tak_jobs import NOTIFY_QUEUE_NAME
from detection_api.tak.jobs import PayloadRejected, dead_letter, read_job_calls

log = logging.getLogger(__name__)

QUEUE_KEY = f"rq:queue:{NOTIFY_QUEUE_NAME}"
SENT_KEY = "detection:notifier:sent"  # zset: one member per post of the rate window
MAX_JOBS_PER_MESSAGE = 1000

# KEYS: sent. ARGV: limit, window ms, member. 0: a slot is taken; else ms until one frees.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + tonumber(ARGV[2]) - now)
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
    alive_ttl_seconds: float = 30.0  # must exceed the longest step (a 10 s POST)
    claim_block_seconds: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifierConfig:
        return cls(secret(settings.discord_webhook_url), settings.notify_max_per_minute)


class Notifier:
    def __init__(self, redis: Redis, config: NotifierConfig, *, name: str | None = None) -> None:
        self.redis, self.config, self._url = redis, config, config.webhook_url
        self.name = name or f"notifier.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.ledger = ClaimLedger(
            redis, QUEUE_KEY, self.name, config.alive_ttl_seconds, group="notifier"
        )
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
                delay = self._redis_backoff.next_delay()
                detail = scrub(f"{type(exc).__name__}: {exc}", self._url)[:300]
                log.error("%s for notifications (%s); retrying in %.1f s", what, detail, delay)
                stop.wait(delay)
        try:
            self.ledger.retire()
        except RedisError as exc:
            log.error("Redis unavailable at notifier shutdown (%s): claims left to others", exc)

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
        window_ms = int(self.config.rate_window_seconds * 1000)
        args = [self.config.max_per_minute, window_ms, f"{self.name}:{uuid.uuid4().hex}"]
        return int(self._take_slot([SENT_KEY], args)) / 1000

    def _post(self, notifications: list[Notification], webhook: WebhookClient) -> None:
        message, ids = build_message(notifications), [n.job_id for n in notifications]
        if message is None:  # every claimed job failed or vanished
            return
        result = webhook.post(message)
        if result.outcome == Outcome.DELIVERED:
            self._webhook_backoff.reset()
            self.ledger.release_delivered(self.redis, ids)
            log.info("posted a Discord message for %d notification(s)", len(notifications))
            return
        wait = result.retry_after or 0.0
        if result.outcome != Outcome.RATE_LIMITED:
            wait = max(wait, self._webhook_backoff.next_delay())
        self._not_before = time.monotonic() + wait
        if result.outcome == Outcome.REJECTED:
            reason = f"Discord webhook {webhook.redacted} rejected the message: {result.detail}"
            log.error("%s; %d notification(s) failed, next post in %.1f s", reason, len(ids), wait)
            self._fail(dict.fromkeys(ids, reason))
            return
        self.ledger.requeue(ids)
        what = f"Discord webhook {webhook.redacted} unavailable ({result.detail})"
        log.warning("%s; %d notification(s) kept, next post in %.1f s", what, len(ids), wait)

    def _read(self, ids: list[str]) -> list[Notification]:
        """The claimed jobs as notifications; those that can never be posted fail now."""
        notifications: list[Notification] = []
        rejected: dict[str, str] = {}
        for job_id, call in zip(ids, read_job_calls(self.redis, ids), strict=True):
            try:
                if call is None or isinstance(call, PayloadRejected):
                    raise call or ValueError("gone (posted after its claim was taken back)")
                if call.func_name != NOTIFY_FUNC:
                    raise ValueError(f"job runs {call.func_name!r}, not {NOTIFY_FUNC}")
                notifications.append(parse_notification(job_id, call.kwargs))
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
