"""``detection-api queue status|dead|requeue|purge``: the operator's view of delivery.

Dead letters live in three places, all listed by ``queue dead``: the forwarder's (``--queue tak``,
rq's failed registry), the notifier's (``--queue notify``) and the Knative Broker's (``--queue
broker``: events the Trigger could not deliver, stored by the function's ``POST /dead-letters``,
with Knative's error code and destination). Without ``--queue`` the text listing shows tak and
broker.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict

from redis import Redis
from redis.exceptions import RedisError

from detection_api.settings import get_settings
from detection_api.store import broker_dead_letters
from detection_api.tak import queue_admin as admin

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _status(redis: Redis, as_json: bool) -> int:
    status = admin.queue_status(redis)
    if as_json:
        print(json.dumps(status.as_dict(), indent=2))
        return 0
    now = time.time()
    oldest = _age(status.oldest_age_seconds)
    print(f"queue tak      {status.depth['tak']:>8} waiting   oldest {oldest}")
    print(f"queue notify   {status.depth['notify']:>8} waiting")
    dead = status.dead_letters
    print(f"dead letters   {dead['tak']:>8} tak, {dead['notify']} notify")
    if not status.forwarders:
        print("forwarders     none registered (is `detection-api worker` running?)")
    for fwd in status.forwarders:
        tak = {True: "connected", False: "DISCONNECTED", None: "unknown"}[fwd.tak_connected]
        since = f" for {_age(now - fwd.since)}" if fwd.since else ""
        print(
            f"forwarder      {fwd.name}: {'alive' if fwd.alive else 'DEAD'}, "
            f"{fwd.in_flight} in flight, TAK {tak}{since} {fwd.tak_url or ''}".rstrip()
        )
        if fwd.tak_confirm and fwd.tak_connected:
            none = fwd.tak_confirm == "none"
            note = " (NOTHING IS CONFIRMED: records end 'sent')" if none else ""
            print(f"               confirmation: {fwd.tak_confirm}{note}")
        if fwd.last_error and fwd.tak_connected is False:
            print(f"               last error: {fwd.last_error}")
    return 0


def _broker_dead(redis: Redis, as_json: bool) -> int:
    letters = broker_dead_letters.list_letters(redis)
    if as_json:
        print(json.dumps([asdict(letter) for letter in letters], indent=2))
        return 0
    if not letters:
        print("no dead letters from the broker")
    now = time.time()
    for letter in letters:
        # Producer-chosen text: printed with repr-style escapes, never raw to the terminal.
        print(
            f"{letter.entry_id}  {_age(now - letter.received_at)} ago  broker  "
            f"error {letter.error_code or '?'}  dest {letter.error_dest or '?'!r}"
        )
        print(f"    event {letter.event_id!r} from {letter.source!r} type {letter.type!r}")
    return 0


def _dead(redis: Redis, queue: str | None, as_json: bool) -> int:
    if queue == broker_dead_letters.QUEUE_LABEL:
        return _broker_dead(redis, as_json)
    if queue is None and not as_json:
        _dead(redis, "tak", as_json)
        return _broker_dead(redis, as_json)
    queue = queue or "tak"
    letters = admin.dead_letters(redis, queue)
    if as_json:
        print(json.dumps([asdict(letter) for letter in letters], indent=2))
        return 0
    if not letters:
        print(f"no dead letters in queue {queue}")
    now = time.time()
    for letter in letters:
        age = _age(now - letter.failed_at) if letter.failed_at else "?"
        records = ",".join(letter.record_ids[:3]) + ("..." if len(letter.record_ids) > 3 else "")
        print(f"{letter.job_id}  {age} ago  {len(letter.record_ids)} record(s) [{records}]")
        print(f"    {letter.reason}")
    return 0


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    redis = Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=10, socket_connect_timeout=5
    )
    try:
        if args.action == "status":
            return _status(redis, args.json)
        if args.action == "dead":
            return _dead(redis, args.queue, args.json)
        if args.action == "requeue":
            if args.queue == broker_dead_letters.QUEUE_LABEL:
                print(
                    "requeue is not applicable to broker dead letters: the function never "
                    "accepted them (see the error code in `queue dead --queue broker`); fix the "
                    "cause and have the producer send the event again",
                    file=sys.stderr,
                )
                return 2
            if not args.ids and not args.all:
                print("error: give job ids or --all", file=sys.stderr)
                return 2
            done = admin.requeue(
                redis,
                None if args.all else args.ids,
                queue=args.queue,
                retention_seconds=settings.retention_seconds,
            )
            missing = [] if args.all else sorted(set(args.ids) - set(done))
            print(f"requeued {len(done)} job(s) at the front of queue {args.queue}")
            for job_id in missing:
                print(f"not a dead letter: {job_id}", file=sys.stderr)
            return 1 if missing else 0
        if args.action == "purge":
            try:
                older = parse_duration(args.older_than)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            if args.queue == broker_dead_letters.QUEUE_LABEL:
                count = broker_dead_letters.purge(redis, older)
            else:
                count = len(admin.purge_dead(redis, older, queue=args.queue))
            print(f"purged {count} dead letter(s) older than {args.older_than}")
            return 0
    except RedisError as exc:
        print(f"error: Redis at REDIS_URL is unavailable: {exc}", file=sys.stderr)
        return 1
    return 2
