"""The notifier: consumes rq's ``notify`` queue and posts coalesced, rate-limited Discord messages.

It runs as a background thread of the forwarder process (``Notifier(settings, redis).run(stop)``).
No rq ``Worker`` runs in that thread (rq installs signal handlers, which only the main thread may
do); the notifier keeps rq's data structures instead, as the forwarder does for ``tak``:

1. **One active notifier.** Forwarder replicas each run a notifier, but only the holder of a Redis
   lease (``detection:notifier:lease``, renewed every loop, 30 s TTL) consumes. So the rate limit,
   the coalescing and the TAK-outage de-duplication hold for the whole deployment, not per pod.
2. **Claim.** Job ids move atomically from ``rq:queue:notify`` into
   ``detection:notifier:processing`` (BLMOVE waits on an empty queue); after the first one, more
   are gathered for ``coalesce_seconds``, up to ``max_jobs_per_message``. A new lease holder first
   puts whatever a dead holder left in the processing list back at the front of the queue: a crash
   loses nothing (at worst a message is posted twice).
3. **Rate limit.** At most ``NOTIFY_MAX_PER_MINUTE`` delivered messages in any 60 s window (a
   sliding window over the send times, kept in Redis so a new lease holder inherits it). Nothing is
   claimed while the limit is reached: notifications stay queued and coalesce into the next message.
4. **Post** one message for everything claimed (``notify.build_message``) with urllib, 10 s timeout,
   no redirects (a redirect could carry the token to another host).
   - 2xx: the jobs are deleted (``result_ttl=0``).
   - 429: ``retry_after`` (JSON body, else ``Retry-After`` header) is honoured; jobs back to the
     front of the queue.
   - 5xx, 408, timeouts, network errors: capped exponential backoff; jobs back to the front.
   - any other status (a deleted or wrong webhook): the jobs go to rq's ``FailedJobRegistry`` of
     ``notify`` with the reason (requeue-able once the webhook is fixed), and the next post waits
     the same backoff (what queues up meanwhile is failed in one go, not one post per window).
   A job that can never be rendered (unknown kind, bad payload) goes to the failed registry at once.
5. **TAK outages** are announced once: a ``tak_disconnected`` for an endpoint whose outage was
   already announced (and not closed by a ``tak_reconnected``) is dropped, as is a
   ``tak_reconnected`` without an announced outage. The open outages live in Redis; an announcement
   is forgotten after ``outage_memory_seconds`` (6 h), so a forwarder that never reports the
   reconnection cannot mute later outages forever.

The webhook URL carries a secret token: it is never logged, and every text that could contain it
(error messages, response bodies) is scrubbed first. ``DISCORD_WEBHOOK_URL`` unset: producers
enqueue nothing (``notify.notify_queue`` returns None) and the notifier logs once and idles.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq.job import Job, get_current_job
from rq.results import Result
from rq.serializers import JSONSerializer

from detection_api.alerts.notify import (
    NOTIFY_FUNC,
    InvalidNotification,
    Notification,
    NotificationKind,
    TakDisconnected,
    build_message,
    parse_notification,
)
from detection_api.settings import Settings, get_settings, secret
from detection_api.store.list_scripts import MOVE_HEAD, RETURN_TO_FRONT
from detection_api.store.tak_jobs import NOTIFY_QUEUE_NAME
from detection_api.tak.jobs import PayloadRejected, dead_letter, read_job_calls

log = logging.getLogger(__name__)

QUEUE_KEY = f"rq:queue:{NOTIFY_QUEUE_NAME}"
PROCESSING_KEY = "detection:notifier:processing"
LEASE_KEY = "detection:notifier:lease"
SENT_KEY = "detection:notifier:sent"  # zset of delivered messages' send times (rate window)
OUTAGES_KEY = "detection:notifier:tak_outages"  # hash endpoint -> announced outage (JSON)
USER_AGENT = "detection-api-notifier/1.0"  # urllib's default agent is refused by Cloudflare
MAX_RESPONSE_BYTES = 4096
_JOB_KEY_PREFIX = Job.key_for("")
_RESULT_KEY_PREFIX = Result.get_key("")


# --- secrets -----------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """A webhook URL fit for logs: scheme and host only (the path holds the token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid webhook URL>"
    return f"{parts.scheme or '?'}://{host}{port}/***"


def secret_fragments(url: str) -> list[str]:
    """Every piece of the webhook URL that must not appear in a log line or stored reason."""
    fragments = {url, url.rstrip("/")}
    try:
        parts = urlsplit(url)
    except ValueError:
        return sorted(fragments, key=len, reverse=True)
    fragments.update({parts.path, parts.query, parts.password or ""})
    # Discord's token is the last path segment (68 characters); ids are shorter but harmless.
    fragments.update(segment for segment in parts.path.split("/") if len(segment) >= 16)
    return sorted((f for f in fragments if len(f) >= 4), key=len, reverse=True)


def scrub(text: str, url: str | None) -> str:
    """``text`` with every fragment of the webhook URL replaced by ``***``."""
    if not url:
        return text
    for fragment in secret_fragments(url):
        text = text.replace(fragment, "***")
    return text


# --- the webhook -------------------------------------------------------------------------------


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RATE_LIMITED = "rate_limited"  # 429: wait retry_after, keep the jobs
    RETRY = "retry"  # 5xx, 408, network: back off, keep the jobs
    REJECTED = "rejected"  # other 4xx/3xx: the jobs are failed with this reason


@dataclass(frozen=True, slots=True)
class WebhookResult:
    outcome: Outcome
    status: int | None  # HTTP status; None: no response
    detail: str  # scrubbed, for logs and failure reasons
    retry_after: float | None = None  # seconds (429, or a 5xx that says so)


DEFAULT_RETRY_AFTER_SECONDS = 5.0


def _seconds(value: object) -> float | None:
    """A non-negative finite number of seconds from a JSON value or header text, else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _json_object(body: bytes) -> Mapping[str, Any]:
    try:
        decoded = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def classify_response(
    status: int,
    headers: Mapping[str, str] | Message,
    body: bytes,
    *,
    webhook_url: str | None = None,
    max_retry_after: float = 600.0,
) -> WebhookResult:
    """What a webhook answer means for the jobs of the message (pure)."""
    if 200 <= status < 300:
        return WebhookResult(Outcome.DELIVERED, status, f"HTTP {status}")
    data = _json_object(body)
    header_retry = _seconds(headers.get("Retry-After")) or _seconds(
        headers.get("X-RateLimit-Reset-After")
    )
    message = data.get("message") if isinstance(data.get("message"), str) else None
    text = message or body.decode("utf-8", "replace").strip()
    detail = scrub(f"HTTP {status}" + (f": {text[:200]}" if text else ""), webhook_url)
    if status == 429:
        retry_after = _seconds(data.get("retry_after"))
        if retry_after is None:
            retry_after = header_retry
        if retry_after is None:
            retry_after = DEFAULT_RETRY_AFTER_SECONDS
        scope = " (global)" if data.get("global") is True else ""
        return WebhookResult(
            Outcome.RATE_LIMITED,
            status,
            detail + scope,
            retry_after=min(retry_after, max_retry_after),
        )
    if status >= 500 or status == 408:
        retry_after = None if header_retry is None else min(header_retry, max_retry_after)
        return WebhookResult(Outcome.RETRY, status, detail, retry_after=retry_after)
    return WebhookResult(Outcome.REJECTED, status, detail)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status: handled as rejected


class WebhookClient:
    """POSTs JSON to the webhook; every failure becomes a :class:`WebhookResult`, never an
    exception, and no text it returns contains the URL."""

    def __init__(self, url: str, timeout: float = 10.0, max_retry_after: float = 600.0) -> None:
        self._url = url
        self.timeout = timeout
        self.max_retry_after = max_retry_after
        self._opener = urllib.request.build_opener(_NoRedirect)

    @property
    def redacted(self) -> str:
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"WebhookClient({self.redacted})"

    def post(self, body: Mapping[str, Any]) -> WebhookResult:
        request = urllib.request.Request(  # noqa: S310 (http(s) checked by usable_webhook_url)
            self._url,
            data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return classify_response(
                    response.status,
                    response.headers,
                    response.read(MAX_RESPONSE_BYTES),
                    webhook_url=self._url,
                    max_retry_after=self.max_retry_after,
                )
        except urllib.error.HTTPError as exc:
            try:
                error_body = exc.read(MAX_RESPONSE_BYTES)
            except (OSError, http.client.HTTPException):
                error_body = b""
            finally:
                exc.close()
            return classify_response(
                exc.code,
                exc.headers,
                error_body,
                webhook_url=self._url,
                max_retry_after=self.max_retry_after,
            )
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            # URLError wraps refused/unreachable/DNS; TimeoutError and resets are OSErrors.
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            detail = f"no answer: {type(reason).__name__}: {reason}"
            return WebhookResult(Outcome.RETRY, None, scrub(detail, self._url)[:300])


def usable_webhook_url(url: str | None) -> bool:
    if not url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


# --- pure policies -----------------------------------------------------------------------------


class SlidingWindowLimiter:
    """At most ``limit`` events in any ``window`` seconds.

    Not a token bucket: a bucket of capacity N refilled at N per minute lets 2N-1 messages through
    in one minute (a full bucket, then the refill); NOTIFY_MAX_PER_MINUTE promises at most N.
    """

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._sent: deque[float] = deque()

    def _forget_old(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()

    def delay(self, now: float) -> float:
        """Seconds until one more event is allowed (0: now)."""
        self._forget_old(now)
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[-self.limit] + self.window - now

    def record(self, now: float) -> None:
        self._sent.append(now)

    def load(self, times: Iterable[float], now: float) -> None:
        """Replace the history (e.g. with the send times another notifier left in Redis)."""
        self._sent = deque(sorted(t for t in times if t <= now))
        self._forget_old(now)

    def __len__(self) -> int:
        return len(self._sent)


def retry_delay(failures: int, base: float, cap: float) -> float:
    """Capped exponential backoff: base, 2·base, 4·base … cap (failures counts from 1)."""
    return min(cap, base * 2 ** max(0, failures - 1))


@dataclass(frozen=True, slots=True)
class OpenOutage:
    """A TAK outage that was announced and not yet closed by a reconnection."""

    since: float | None
    announced_at: float

    def to_json(self) -> str:
        return json.dumps({"since": self.since, "announced_at": self.announced_at})

    @classmethod
    def from_json(cls, raw: bytes | str) -> OpenOutage | None:
        data = _json_object(raw.encode() if isinstance(raw, str) else raw)
        announced_at = _seconds(data.get("announced_at"))
        if announced_at is None:
            return None
        return cls(_seconds(data.get("since")), announced_at)


@dataclass(frozen=True, slots=True)
class TakCoalescing:
    shown: list[Notification]  # go into the message
    dropped: list[Notification]  # duplicates: done without a message
    open_after: dict[str, OpenOutage]  # the open outages once the message is delivered


def coalesce_tak_events(
    notifications: Sequence[Notification],
    open_outages: Mapping[str, OpenOutage],
    now: float,
    memory_seconds: float,
) -> TakCoalescing:
    """One announcement per outage: drop disconnects of an endpoint already announced down, and
    reconnects of an endpoint not announced down. Other kinds pass unchanged, in order."""
    state = {
        endpoint: outage
        for endpoint, outage in open_outages.items()
        if now - outage.announced_at < memory_seconds
    }
    shown: list[Notification] = []
    dropped: list[Notification] = []
    for notification in notifications:
        if notification.kind == NotificationKind.TAK_DISCONNECTED:
            endpoint = notification.payload.endpoint
            if endpoint in state:
                dropped.append(notification)
                continue
            payload = notification.payload
            since = payload.since if isinstance(payload, TakDisconnected) else None
            state[endpoint] = OpenOutage(since, now)
        elif notification.kind == NotificationKind.TAK_RECONNECTED:
            endpoint = notification.payload.endpoint
            if endpoint not in state:
                dropped.append(notification)
                continue
            del state[endpoint]
        shown.append(notification)
    return TakCoalescing(shown, dropped, state)


# --- Redis side --------------------------------------------------------------------------------

# KEYS: lease. ARGV: owner, ttl ms. Take the lease if free, renew it if ours. 1: held.
_LEASE = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease. ARGV: owner.
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: queue, processing. Everything in processing back to the front of the queue, in order.
_REQUEUE_ALL = """
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #ids, 1, -1 do redis.call('LPUSH', KEYS[1], ids[i]) end
redis.call('DEL', KEYS[2])
return #ids
"""

# KEYS: processing. ARGV: job key prefix, result key prefix, ids. Posted: claims and jobs gone.
# The job is deleted even if a new lease holder already took the claim back, so that it finds
# the job gone and does not post it a second time.
_COMPLETE = """
for i = 3, #ARGV do
  redis.call('LREM', KEYS[1], 1, ARGV[i])
  redis.call('DEL', ARGV[1] .. ARGV[i], ARGV[2] .. ARGV[i])
end
return #ARGV - 2
"""


class NotifyClaims:
    """The lease and the claims of the active notifier on the ``notify`` queue."""

    def __init__(self, redis: Redis, owner: str, lease_ttl_seconds: float) -> None:
        self.redis = redis
        self.owner = owner
        self._lease_ttl_ms = str(max(1, int(lease_ttl_seconds * 1000)))
        self._lease = redis.register_script(_LEASE)
        self._release_lease = redis.register_script(_RELEASE_LEASE)
        self._claim = redis.register_script(MOVE_HEAD)
        self._requeue_ids = redis.register_script(RETURN_TO_FRONT)
        self._requeue_all = redis.register_script(_REQUEUE_ALL)
        self._complete = redis.register_script(_COMPLETE)

    def hold_lease(self) -> bool:
        return bool(self._lease(keys=[LEASE_KEY], args=[self.owner, self._lease_ttl_ms]))

    def release_lease(self) -> None:
        self._release_lease(keys=[LEASE_KEY], args=[self.owner])

    def claim(self, limit: int, block_seconds: float = 0.0) -> list[str]:
        """Up to ``limit`` ids from the head of the queue; waits up to ``block_seconds`` (BLMOVE)
        for the first one when the queue is empty."""
        if limit < 1:
            return []
        ids = self._claim_now(limit)
        if ids or block_seconds <= 0:
            return ids
        first = self.redis.blmove(QUEUE_KEY, PROCESSING_KEY, block_seconds, "LEFT", "RIGHT")
        if first is None:
            return []
        return [_text(first), *self._claim_now(limit - 1)]

    def _claim_now(self, limit: int) -> list[str]:
        if limit < 1:
            return []
        return [_text(i) for i in self._claim(keys=[QUEUE_KEY, PROCESSING_KEY], args=[limit])]

    def requeue(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        return int(self._requeue_ids(keys=[QUEUE_KEY, PROCESSING_KEY], args=list(job_ids)))

    def requeue_all(self) -> int:
        return int(self._requeue_all(keys=[QUEUE_KEY, PROCESSING_KEY]))

    def complete(self, pipe: Pipeline | Redis, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._complete(
                keys=[PROCESSING_KEY],
                args=[_JOB_KEY_PREFIX, _RESULT_KEY_PREFIX, *job_ids],
                client=pipe,
            )

    def forget(self, pipe: Pipeline, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            pipe.lrem(PROCESSING_KEY, 1, job_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the consumer ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    webhook_url: str | None = field(default=None, repr=False)  # holds a token: never printed
    max_per_minute: int = 20
    rate_window_seconds: float = 60.0  # the "minute" (tests shorten it)
    coalesce_seconds: float = 1.0  # gather a burst this long after its first notification
    max_jobs_per_message: int = 1000
    request_timeout_seconds: float = 10.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    max_retry_after_seconds: float = 600.0
    lease_ttl_seconds: float = 30.0  # must exceed the longest step (a 10 s POST)
    claim_block_seconds: float = 1.0
    outage_memory_seconds: float = 6 * 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifierConfig:
        return cls(
            webhook_url=secret(settings.discord_webhook_url),
            max_per_minute=settings.notify_max_per_minute,
        )

    @property
    def longest_wait_seconds(self) -> float:
        """The loop sleeps at most this long between lease renewals and stop checks."""
        return max(self.claim_block_seconds, self.coalesce_seconds, 1.0)


def default_notifier_name() -> str:
    return f"notifier.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


class Notifier:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        config: NotifierConfig | None = None,
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.config = config or NotifierConfig.from_settings(settings)
        self.name = name or default_notifier_name()
        self.clock = clock  # wall clock: send times are shared through Redis with other pods
        self.claims = NotifyClaims(redis, self.name, self.config.lease_ttl_seconds)
        self.limiter = SlidingWindowLimiter(
            self.config.max_per_minute, self.config.rate_window_seconds
        )
        url = self.config.webhook_url
        self.webhook = (
            WebhookClient(
                url, self.config.request_timeout_seconds, self.config.max_retry_after_seconds
            )
            if url and usable_webhook_url(url)
            else None
        )
        self._holding_lease = False
        self._not_before = 0.0  # retry_after / backoff: no post before this (clock time)
        self._webhook_failures = 0
        self._redis_failures = 0

    # --- life cycle -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Post notifications until ``stop`` is set. Never raises: Redis and webhook trouble, and
        even a bug, are logged and retried with backoff."""
        if self.webhook is None:
            if self.config.webhook_url:
                log.warning("DISCORD_WEBHOOK_URL is not an http(s) URL: Discord notifications off")
            else:
                log.info("DISCORD_WEBHOOK_URL is not set: Discord notifications are off")
            stop.wait()
            return
        log.info(
            "notifier %s: queue %s -> Discord webhook %s, at most %d message(s) per %g s",
            self.name,
            NOTIFY_QUEUE_NAME,
            self.webhook.redacted,
            self.config.max_per_minute,
            self.config.rate_window_seconds,
        )
        try:
            while not stop.is_set():
                try:
                    self._step(stop)
                    self._redis_failures = 0
                except RedisError as exc:
                    # Whatever was claimed stays in the processing list; the next lease holder
                    # (us again, once Redis answers) puts it back in the queue.
                    self._holding_lease = False
                    self._redis_failures += 1
                    delay = retry_delay(self._redis_failures, 0.5, 30.0)
                    log.error(
                        "Redis unavailable for notifications (%s); retrying in %.1f s",
                        type(exc).__name__,
                        delay,
                    )
                    stop.wait(delay)
                except Exception as exc:
                    # A bug must not silently end notifications for the life of the process:
                    # log it (scrubbed, no traceback that could quote the URL), retry later.
                    self._holding_lease = False  # the claims go back to the queue first
                    self._redis_failures += 1
                    delay = retry_delay(self._redis_failures, 1.0, 60.0)
                    log.error(
                        "notifier error %s: %s; retrying in %.1f s",
                        type(exc).__name__,
                        scrub(str(exc), self.config.webhook_url)[:500],
                        delay,
                    )
                    stop.wait(delay)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if not self._holding_lease:
            return
        try:
            returned = self.claims.requeue_all()
            self.claims.release_lease()
            if returned:
                log.info("notifier returned %d claimed notification(s) to the queue", returned)
        except RedisError as exc:
            log.error("Redis unavailable at notifier shutdown (%s): the lease expires", exc)
        self._holding_lease = False
        log.info("notifier %s stopped", self.name)

    # --- one step ---------------------------------------------------------------------------

    def _step(self, stop: threading.Event) -> None:
        if not self._hold_lease():
            stop.wait(self.config.longest_wait_seconds)
            return
        wait = self._wait_before_next_message()
        if wait > 0:
            # Nothing is claimed while we may not post: it all coalesces in the queue.
            stop.wait(min(wait, self.config.longest_wait_seconds))
            return
        limit = self.config.max_jobs_per_message
        ids = self.claims.claim(limit, block_seconds=self.config.claim_block_seconds)
        if not ids:
            return
        if stop.wait(self.config.coalesce_seconds):
            self.claims.requeue(ids)
            return
        ids += self.claims.claim(limit - len(ids))
        self._deliver(ids)

    def _hold_lease(self) -> bool:
        held = self.claims.hold_lease()
        if held and not self._holding_lease:
            returned = self.claims.requeue_all()
            if returned:
                log.warning(
                    "%d notification(s) left claimed by a stopped notifier are back in the queue "
                    "(they may be posted twice)",
                    returned,
                )
            now = self.clock()
            window = self.config.rate_window_seconds
            sent = self.redis.zrangebyscore(SENT_KEY, now - window, "+inf", withscores=True)
            self.limiter.load((score for _member, score in sent), now)
            log.info("notifier %s is the active notifier", self.name)
        elif not held and self._holding_lease:
            log.warning("notifier %s lost its lease; another notifier is active", self.name)
        self._holding_lease = held
        return held

    def _wait_before_next_message(self) -> float:
        now = self.clock()
        return max(self.limiter.delay(now), self._not_before - now)

    def _deliver(self, ids: list[str]) -> None:
        notifications = self._read(ids)
        if not notifications:
            return
        now = self.clock()
        coalesced = coalesce_tak_events(
            notifications, self._open_outages(), now, self.config.outage_memory_seconds
        )
        for duplicate in coalesced.dropped:
            log.info("dropping duplicate %s notification %s", duplicate.kind, duplicate.job_id)
        message = build_message(coalesced.shown)
        job_ids = [n.job_id for n in notifications]
        if message is None:
            with self.redis.pipeline(transaction=True) as pipe:
                self.claims.complete(pipe, job_ids)
                pipe.execute()
            return
        assert self.webhook is not None  # run() does not step without one
        self.claims.hold_lease()  # renew right before a post that may take the full timeout
        result = self.webhook.post(message.body)
        done_at = self.clock()
        if result.outcome == Outcome.DELIVERED:
            self._after_delivery(job_ids, coalesced, done_at)
            log.info(
                "posted a Discord message for %d notification(s): %d alert(s) in detail, "
                "%d summarised, %d other, %d duplicate(s) dropped",
                len(notifications),
                message.detailed_alerts,
                message.summarised_alerts,
                len(coalesced.shown) - message.detailed_alerts - message.summarised_alerts,
                len(coalesced.dropped),
            )
        elif result.outcome == Outcome.REJECTED:
            reason = (
                f"Discord webhook {self.webhook.redacted} rejected the message: {result.detail}"
            )
            self._fail({n.job_id: reason for n in coalesced.shown}, coalesced.dropped)
            # Back off all the same: a deleted webhook must not be hit once per coalescing
            # window (Cloudflare bans clients that keep making invalid requests).
            self._webhook_failures += 1
            delay = retry_delay(
                self._webhook_failures,
                self.config.retry_base_seconds,
                self.config.retry_max_seconds,
            )
            self._not_before = done_at + delay
            log.error(
                "%s; %d notification(s) failed, next attempt in %.1f s",
                reason,
                len(coalesced.shown),
                delay,
            )
        else:
            self.claims.requeue(job_ids)
            if result.outcome == Outcome.RATE_LIMITED:
                delay = result.retry_after or 0.0
                what = "rate limited by Discord"
            else:
                self._webhook_failures += 1
                delay = retry_delay(
                    self._webhook_failures,
                    self.config.retry_base_seconds,
                    self.config.retry_max_seconds,
                )
                delay = max(delay, result.retry_after or 0.0)
                what = "Discord webhook unavailable"
            self._not_before = done_at + delay
            log.warning(
                "%s (%s, %s); %d notification(s) kept, next attempt in %.1f s",
                what,
                self.webhook.redacted,
                result.detail,
                len(job_ids),
                delay,
            )

    def _read(self, ids: list[str]) -> list[Notification]:
        """The claimed jobs as notifications; undecodable ones fail now, vanished ones are
        forgotten."""
        notifications: list[Notification] = []
        rejected: dict[str, str] = {}
        vanished: list[str] = []
        for job_id, call in zip(ids, read_job_calls(self.redis, ids), strict=True):
            if call is None:
                vanished.append(job_id)
            elif isinstance(call, PayloadRejected):
                rejected[job_id] = call.reason
            elif call.func_name != NOTIFY_FUNC:
                rejected[job_id] = f"job runs {call.func_name!r}, not {NOTIFY_FUNC}"
            else:
                try:
                    notifications.append(parse_notification(job_id, call.kwargs))
                except InvalidNotification as exc:
                    rejected[job_id] = str(exc)
        if vanished:
            log.info("%d notification job(s) vanished (already posted): skipped", len(vanished))
        if rejected or vanished:
            for job_id, reason in rejected.items():
                log.error("notification %s cannot be posted: %s", job_id, reason)
            self._fail(rejected, (), vanished=vanished)
        return notifications

    def _fail(
        self,
        reasons: Mapping[str, str],
        done: Sequence[Notification],
        *,
        vanished: Sequence[str] = (),
    ) -> None:
        """Jobs into rq's failed registry of ``notify`` (requeue-able) with their reason; the
        ``done`` ones (duplicates) deleted; all claims dropped, in one transaction."""
        jobs = Job.fetch_many(list(reasons), self.redis, serializer=JSONSerializer)
        with self.redis.pipeline(transaction=True) as pipe:
            for job_id, job in zip(reasons, jobs, strict=True):
                if job is not None:
                    dead_letter(job, scrub(reasons[job_id], self.config.webhook_url), pipe)
            self.claims.forget(pipe, [*reasons, *vanished])
            self.claims.complete(pipe, [n.job_id for n in done])
            pipe.execute()

    def _after_delivery(self, job_ids: list[str], coalesced: TakCoalescing, at: float) -> None:
        self.limiter.record(at)
        self._webhook_failures = 0
        self._not_before = 0.0
        window = self.config.rate_window_seconds
        with self.redis.pipeline(transaction=True) as pipe:
            self.claims.complete(pipe, job_ids)
            pipe.zadd(SENT_KEY, {f"{at!r}:{self.name}": at})
            pipe.zremrangebyscore(SENT_KEY, "-inf", at - window)
            pipe.expire(SENT_KEY, max(1, math.ceil(2 * window)))
            pipe.delete(OUTAGES_KEY)
            if coalesced.open_after:
                pipe.hset(
                    OUTAGES_KEY,
                    mapping={ep: o.to_json() for ep, o in coalesced.open_after.items()},
                )
            pipe.execute()

    def _open_outages(self) -> dict[str, OpenOutage]:
        outages: dict[str, OpenOutage] = {}
        for raw_endpoint, raw in self.redis.hgetall(OUTAGES_KEY).items():
            outage = OpenOutage.from_json(raw)
            if outage is not None:
                outages[_text(raw_endpoint)] = outage
        return outages


# --- the rq job function (slow path) ------------------------------------------------------------


class NotificationNotPosted(RuntimeError):
    """The webhook did not take the message (the text never contains the webhook URL)."""


def deliver_notification(**kwargs: Any) -> str:
    """Post one notification on its own (rq job function).

    The notifier above never calls this: it claims ``notify`` jobs itself to coalesce and rate
    limit them. The function exists so that a plain ``rq worker notify --with-scheduler`` also
    delivers (one message per notification, no coalescing, no outage de-duplication), with the
    job's Retry applying to webhook failures.
    """
    settings = get_settings()
    url = secret(settings.discord_webhook_url)
    if not url or not usable_webhook_url(url):
        log.info("DISCORD_WEBHOOK_URL unset or not http(s): notification skipped")
        return "notifications off"
    job = get_current_job()
    notification = parse_notification(job.id if job is not None else "-", kwargs)
    message = build_message([notification])
    if message is None:  # pragma: no cover (one notification always makes a message)
        return "nothing to post"
    result = WebhookClient(url).post(message.body)
    if result.outcome != Outcome.DELIVERED:
        raise NotificationNotPosted(f"{result.outcome.value}: {result.detail}")
    return "delivered"
