"""Write-if-absent in one round trip: the idempotent, all-or-nothing store behind ingest.

The writes (record hashes, audit entries, rq's own job hashes and queue push) are recorded with a
redis-py pipeline that is never executed, then sent to a Lua script that checks that none of the
given keys exists and, only then, runs every recorded command. Scripts run atomically and reach the
appendonly file as one unit, so a detection is stored completely or not at all, and two concurrent
redeliveries of one event cannot both be queued. WATCH/MULTI gives the same guarantee in three
round trips; this takes one, which is most of the ingest latency on loopback.

The same script can first charge a rate-limit ``Budget`` (the request's sliding-window counters),
so an ingest request costs one round trip, not two: over the limit, it writes nothing. The
charge runs the ``limits`` library's own acquire script (the one ``limits.storage.RedisStorage``
runs for ``SlidingWindowCounterRateLimiter.hit``) on the library's keys, so every other route,
charged by the library, shares the same budget with the same arithmetic.

Standalone Redis only: the script touches keys it is not given in KEYS, which Redis Cluster forbids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import Redis
from redis.client import Pipeline

# limits' sliding-window acquire (KEYS: previous, current; ARGV: limit, expiry s, amount), as a
# local function: its KEYS/ARGV are the function's parameters.
_ACQUIRE = (
    resources.files("limits.resources.redis.lua_scripts")
    .joinpath("acquire_sliding_window.lua")
    .read_text(encoding="utf-8")
)

_WRITE_IF_ABSENT = (
    "local function acquire(KEYS, ARGV)\n"
    + _ACQUIRE
    + """
end
local windows = tonumber(ARGV[1])
for _, cost in ipairs({tonumber(ARGV[2]), tonumber(ARGV[3])}) do
  if cost > 0 then
    for w = 1, windows do
      local at = 3 + 2 * (w - 1)
      if not acquire({KEYS[2 * w - 1], KEYS[2 * w]}, {ARGV[at + 1], ARGV[at + 2], cost}) then
        return {-w}
      end
    end
  end
end
local existing = {}
for i = 2 * windows + 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then existing[#existing + 1] = i - 2 * windows end
end
if #existing > 0 then return existing end
local pos = 4 + 2 * windows
local commands = tonumber(ARGV[pos])
pos = pos + 1
for _ = 1, commands do
  local argc = tonumber(ARGV[pos])
  redis.call(unpack(ARGV, pos + 1, pos + argc))
  pos = pos + argc + 1
end
return existing
"""
)


@dataclass(frozen=True, slots=True)
class Window:
    """One sliding-window counter of the ``limits`` library, by its full Redis keys."""

    previous_key: str
    current_key: str
    limit: int
    expiry_seconds: int


@dataclass(frozen=True, slots=True)
class Budget:
    """What the write script charges before it writes: ``first`` on every window in order (the
    request's arrival), then ``rest`` on every window in order, stopping at the first window
    without room (the charges already made stay, as they do with ``limits``); then nothing is
    written. A cost of 0 is not charged."""

    windows: tuple[Window, ...]
    first: int = 1
    rest: int = 0


class BudgetExceeded(Exception):
    """The write script found no room in ``budget.windows[window]``: nothing was written."""

    def __init__(self, window: int) -> None:
        super().__init__(f"rate-limit window {window} is full")
        self.window = window


class AtomicWriter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_WRITE_IF_ABSENT)

    def recorder(self) -> Pipeline:
        """A pipeline to record commands into; pass it to ``write_if_absent`` (never execute it)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.multi()  # rq's enqueue expects a pipeline in MULTI mode; nothing is sent either way
        return pipe

    def write_if_absent(
        self, keys: Sequence[str], recorded: Pipeline, budget: Budget | None = None
    ) -> list[int]:
        """Charge ``budget`` (if any), then run the recorded commands if none of ``keys`` exists.
        Returns the 0-based indexes of the keys that already exist (then nothing was written),
        or [] after writing. Raises ``BudgetExceeded`` when the budget has no room."""
        windows = budget.windows if budget is not None else ()
        script_keys: list[str] = []
        args: list[Any] = [
            len(windows),
            budget.first if budget else 0,
            budget.rest if budget else 0,
        ]
        for window in windows:
            script_keys += [window.previous_key, window.current_key]
            args += [window.limit, window.expiry_seconds]
        script_keys.extend(keys)
        args.append(len(recorded.command_stack))
        for command_args, _options in recorded.command_stack:
            args.append(len(command_args))
            args.extend(command_args)  # redis-py encodes them once, when it packs the EVALSHA
        recorded.reset()
        existing = [int(i) for i in self._script(keys=script_keys, args=args)]
        if existing and existing[0] < 0:
            raise BudgetExceeded(-existing[0] - 1)
        return [i - 1 for i in existing]
