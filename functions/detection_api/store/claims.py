"""In-flight claims of the forwarders (and the notifiers), and the recovery of claims whose
consumer died.

A forwarder claims job ids by moving them, atomically, from the head of ``rq:queue:tak`` into its
own in-flight list ``detection:forwarder:<name>:inflight``: at every instant an id is in exactly
one of the two. A list (not a set) keeps the queue order, so a batch that goes back goes back to
the front in its original order.

Each forwarder refreshes ``detection:forwarder:<name>:alive`` (a key with a TTL) and is listed in
``detection:forwarders``. Any forwarder, including one just restarted under a new name, returns
the in-flight ids of a listed forwarder whose alive key has expired to the front of the queue.
A SIGKILL at any instant therefore loses nothing: ids are at worst delivered twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from rq.job import Job
from rq.results import Result

# The claim list's moves: ids go between a queue list and a processing list atomically.
UNPACK_CHUNK = 1000  # Lua's unpack() has a stack limit; push in slices

# KEYS: queue, processing. ARGV: max ids. The head of the queue to the tail of processing, in order.
MOVE_HEAD = f"""
if tonumber(ARGV[1]) < 1 then return {{}} end -- LRANGE 0 -1 would take the whole queue
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return ids end
redis.call('LTRIM', KEYS[1], #ids, -1)
for i = 1, #ids, {UNPACK_CHUNK} do
  redis.call('RPUSH', KEYS[2], unpack(ids, i, math.min(i + {UNPACK_CHUNK} - 1, #ids)))
end
return ids
"""

# KEYS: queue, processing. ARGV: ids in queue order. Those still in processing go back to the
# front of the queue, in order (an id someone else already returned is not pushed twice).
RETURN_TO_FRONT = """
local owned = {}
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[2], 1, ARGV[i]) == 1 then owned[#owned + 1] = ARGV[i] end
end
for i = #owned, 1, -1 do redis.call('LPUSH', KEYS[1], owned[i]) end
return #owned
"""

# rq's key names, passed to the release script (keys derived inside Lua are built from these).
_JOB_KEY_PREFIX = Job.key_for("")
_RESULT_KEY_PREFIX = Result.get_key("")

log = logging.getLogger(__name__)

FORWARDERS_KEY = "detection:forwarders"  # the members of the "forwarder" group


def members_key(group: str) -> str:
    """The set of consumers of one group (``forwarder``, ``notifier``): reapers only look there."""
    return f"detection:{group}s"


# rq's StartedJobRegistry (``rq:wip:<queue>``, a sorted set of ``<job id>:<execution id>`` scored
# by expiry time) lists the jobs being executed; ``rq info`` and rq-dashboard count "executing"
# there. A ledger given that key keeps every claimed id in it, as ``<job id>:<consumer name>``,
# added and removed by the same scripts that move the ids (one variadic command per batch), and
# marks its rq worker ``busy`` when it claims. Entries expire at the score, after which rq's own
# cleanup drops them (our jobs never have rq's ``started`` status, so rq fails none of them).
_WIP_ADD = """
local function wip_add(wip, score, name, ids)
  if not wip or #ids == 0 then return end
  for i = 1, #ids, UNPACK_CHUNK do
    local members = {}
    for j = i, math.min(i + UNPACK_CHUNK - 1, #ids) do
      members[#members + 1] = score
      members[#members + 1] = ids[j] .. ':' .. name
    end
    redis.call('ZADD', wip, unpack(members))
  end
end
local function wip_remove(wip, name, ids)
  if not wip or #ids == 0 then return end
  for i = 1, #ids, UNPACK_CHUNK do
    local members = {}
    for j = i, math.min(i + UNPACK_CHUNK - 1, #ids) do
      members[#members + 1] = ids[j] .. ':' .. name
    end
    redis.call('ZREM', wip, unpack(members))
  end
end
""".replace("UNPACK_CHUNK", str(UNPACK_CHUNK))

# KEYS: queue, inflight, alive, forwarders set, [started registry, rq worker]. ARGV: max ids,
# alive ttl ms, name, registry score, then ids already moved by BLMOVE (to register).
# Refreshes liveness in the same step, so nothing is ever claimed by a forwarder not alive.
_CLAIM = (
    _WIP_ADD
    + """
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
local ids = (function()
"""
    + MOVE_HEAD
    + """
end)()
local registered = {}
for i = 5, #ARGV do registered[#registered + 1] = ARGV[i] end
for _, id in ipairs(ids) do registered[#registered + 1] = id end
wip_add(KEYS[5], ARGV[4], ARGV[3], registered)
if KEYS[6] and #registered > 0 then redis.call('HSET', KEYS[6], 'state', 'busy') end
return ids
"""
)

# KEYS: queue, inflight, alive, forwarders set, [started registry]. ARGV: name, only_if_dead.
# Puts the in-flight ids back at the front of the queue in their original order.
_REQUEUE = (
    _WIP_ADD
    + """
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #ids, 1, -1 do redis.call('LPUSH', KEYS[1], ids[i]) end
redis.call('DEL', KEYS[2])
if ARGV[2] == '1' then redis.call('SREM', KEYS[4], ARGV[1]) end
wip_remove(KEYS[5], ARGV[1], ids)
return #ids
"""
)

# KEYS: queue, processing, [started registry]. ARGV: name, ids in queue order.
_RETURN_IDS = (
    _WIP_ADD
    + """
local name = ARGV[1]
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
local returned = (function(ARGV)
"""
    + RETURN_TO_FRONT
    + """
end)(ids)
wip_remove(KEYS[3], name, ids)
return returned
"""
)

# KEYS: inflight, [started registry]. ARGV: job key prefix, result key prefix, name, delivered
# job ids. Deletes a job (rq's result_ttl=0: nothing is kept) only if this forwarder still held
# its claim: a job a reaper already put back must survive to be sent again.
_RELEASE_DELIVERED = (
    _WIP_ADD
    + """
local released = {}
for i = 4, #ARGV do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('DEL', ARGV[1] .. ARGV[i], ARGV[2] .. ARGV[i])
    released[#released + 1] = ARGV[i]
  end
end
wip_remove(KEYS[2], ARGV[3], released)
return #released
"""
)

# KEYS: alive, forwarders set. ARGV: alive ttl ms, name.
_REFRESH = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""


def inflight_key(name: str, group: str = "forwarder") -> str:
    return f"detection:{group}:{name}:inflight"


def alive_key(name: str, group: str = "forwarder") -> str:
    return f"detection:{group}:{name}:alive"


@dataclass(frozen=True, slots=True)
class ReapedClaims:
    forwarder: str
    job_count: int


class ClaimLedger:
    """One consumer's claims on one rq queue. Consumers of one queue form a ``group`` (the TAK
    forwarders, the Discord notifiers): a consumer returns the claims of dead members of its own
    group only, to its own queue."""

    def __init__(
        self,
        redis: Redis,
        queue_key: str,
        name: str,
        alive_ttl_seconds: float,
        *,
        group: str = "forwarder",
        started_registry_key: str | None = None,
        worker_key: str | None = None,
        started_ttl_seconds: float = 300.0,
    ) -> None:
        """With ``started_registry_key`` (rq's ``StartedJobRegistry(queue).key``) claimed ids are
        listed there while held, so rq's tools show them executing; ``worker_key`` (the rq
        worker's hash) is set ``busy`` by each claim (the caller sets it idle)."""
        self.redis = redis
        self.started_registry_key = started_registry_key
        self.worker_key = worker_key
        self._started_ttl = started_ttl_seconds
        self.queue_key = queue_key
        self.name = name
        self.group = group
        self.members_key = members_key(group)
        self.inflight_key = inflight_key(name, group)
        self.alive_key = alive_key(name, group)
        self._alive_ttl_ms = str(int(alive_ttl_seconds * 1000))
        self._claim = redis.register_script(_CLAIM)
        self._requeue = redis.register_script(_REQUEUE)
        self._release = redis.register_script(_RELEASE_DELIVERED)
        self._requeue_ids = redis.register_script(_RETURN_IDS)
        self._refresh = redis.register_script(_REFRESH)

    def refresh_alive(self) -> None:
        self._refresh(keys=[self.alive_key, self.members_key], args=[self._alive_ttl_ms, self.name])

    def claim(self, limit: int, block_seconds: float) -> list[str]:
        """Up to ``limit`` ids from the head of the queue, in order; waits up to ``block_seconds``
        (BLMOVE, no polling) when the queue is empty. A ``limit`` below 1 claims nothing."""
        if limit < 1:
            return []
        ids = self._claim_now(limit)
        if ids or block_seconds <= 0:
            return ids
        first = self.redis.blmove(self.queue_key, self.inflight_key, block_seconds, "LEFT", "RIGHT")
        if first is None:
            return []
        # The claim script registers the id BLMOVE took along with the rest (or alone).
        return [_text(first), *self._claim_now(limit - 1, moved=[_text(first)])]

    def _registry_keys(self, *, worker: bool = False) -> list[str]:
        if self.started_registry_key is None:
            return []
        if worker and self.worker_key is not None:
            return [self.started_registry_key, self.worker_key]
        return [self.started_registry_key]

    def _claim_now(self, limit: int, moved: Sequence[str] = ()) -> list[str]:
        raw = self._claim(
            keys=[
                self.queue_key,
                self.inflight_key,
                self.alive_key,
                self.members_key,
                *self._registry_keys(worker=True),
            ],
            args=[
                limit,
                self._alive_ttl_ms,
                self.name,
                repr(time.time() + self._started_ttl),
                *moved,
            ],
        )
        return [_text(job_id) for job_id in raw]

    def forget(self, pipe: Pipeline, job_ids: list[str]) -> None:
        """Drop ids from the in-flight list (dead-lettered: they must never be requeued)."""
        for job_id in job_ids:
            pipe.lrem(self.inflight_key, 1, job_id)
        if job_ids and self.started_registry_key is not None:
            pipe.zrem(self.started_registry_key, *(f"{j}:{self.name}" for j in job_ids))

    def requeue_inflight(self) -> int:
        """Put everything this forwarder holds back at the front of the queue, in order."""
        return int(
            self._requeue(
                keys=[
                    self.queue_key,
                    self.inflight_key,
                    self.alive_key,
                    self.members_key,
                    *self._registry_keys(),
                ],
                args=[self.name, "0"],
            )
        )

    def requeue(self, job_ids: Sequence[str]) -> int:
        """Put these claimed ids (in queue order) back at the front of the queue."""
        if not job_ids:
            return 0
        return int(
            self._requeue_ids(
                keys=[self.queue_key, self.inflight_key, *self._registry_keys()],
                args=[self.name, *job_ids],
            )
        )

    def release_delivered(self, pipe: Pipeline | Redis, job_ids: Sequence[str]) -> None:
        """Delete the delivered jobs and drop their claims (in the caller's transaction)."""
        if job_ids:
            self._release(
                keys=[self.inflight_key, *self._registry_keys()],
                args=[_JOB_KEY_PREFIX, _RESULT_KEY_PREFIX, self.name, *job_ids],
                client=pipe,
            )

    def reap_dead_forwarders(self) -> list[ReapedClaims]:
        """Return the claims of every forwarder whose alive key expired to the queue front."""
        reaped: list[ReapedClaims] = []
        for raw_name in self.redis.smembers(self.members_key):
            name = _text(raw_name)
            if name == self.name:
                continue  # this process is alive: it is running this code
            count = int(
                self._requeue(
                    keys=[
                        self.queue_key,
                        inflight_key(name, self.group),
                        alive_key(name, self.group),
                        self.members_key,
                        *self._registry_keys(),
                    ],
                    args=[name, "1"],
                )
            )
            if count >= 0:
                reaped.append(ReapedClaims(name, count))
                if count:
                    log.warning(
                        "%s %s stopped without releasing its claims: %d job(s) back at the "
                        "front of the queue (they may be delivered twice)",
                        self.group,
                        name,
                        count,
                    )
        return reaped

    def retire(self) -> int:
        """On a clean exit: return any claim, stop being listed, drop the alive key."""
        count = self.requeue_inflight()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.members_key, self.name)
            pipe.delete(self.alive_key)
            pipe.execute()
        return count


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
