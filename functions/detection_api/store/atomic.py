"""Write-if-absent in one round trip: the idempotent, all-or-nothing store behind ingest.

The writes (record hashes, audit entries, rq's own job hashes and queue push) are recorded with a
redis-py pipeline that is never executed, then sent to a Lua script that checks that none of the
given keys exists and, only then, runs every recorded command. Scripts run atomically and reach the
appendonly file as one unit, so a detection is stored completely or not at all, and two concurrent
redeliveries of one event cannot both be queued. WATCH/MULTI gives the same guarantee in three
round trips; this takes one, which is most of the ingest latency on loopback.

Standalone Redis only: the script touches keys it is not given in KEYS, which Redis Cluster forbids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline

_WRITE_IF_ABSENT = """
local existing = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then existing[#existing + 1] = i end
end
if #existing > 0 then return existing end
local pos = 2
for _ = 1, tonumber(ARGV[1]) do
  local argc = tonumber(ARGV[pos])
  redis.call(unpack(ARGV, pos + 1, pos + argc))
  pos = pos + argc + 1
end
return existing
"""


class AtomicWriter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_WRITE_IF_ABSENT)

    def recorder(self) -> Pipeline:
        """A pipeline to record commands into; pass it to ``write_if_absent`` (never execute it)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.multi()  # rq's enqueue expects a pipeline in MULTI mode; nothing is sent either way
        return pipe

    def write_if_absent(self, keys: Sequence[str], recorded: Pipeline) -> list[int]:
        """Run the recorded commands if none of ``keys`` exists. Returns the 0-based indexes of
        the keys that already exist (then nothing was written), or [] after writing."""
        args: list[Any] = [len(recorded.command_stack)]
        for command_args, _options in recorded.command_stack:
            args.append(len(command_args))
            args.extend(command_args)  # redis-py encodes them once, when it packs the EVALSHA
        recorded.reset()
        existing = self._script(keys=list(keys), args=args)
        return [int(i) - 1 for i in existing]
