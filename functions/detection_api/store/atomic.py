"""Write-if-absent in one round trip: the idempotent, all-or-nothing store behind ingest, with the
request's rate-limit charge taken in the same script.

The writes (record hashes, audit entries, rq's own job hashes and queue push) are recorded with a
redis-py pipeline that is never executed, then sent to a Lua script that

1. takes the rate-limit charges (``WindowCharge``): the ``limits`` library's own sliding-window
   acquire script, run once per rule on the library's keys, so a charge taken here and one taken
   by ``SlidingWindowCounterRateLimiter.hit`` count in the same windows. A refused charge stops
   the script: nothing is written, and the caller answers 429 (``RateLimited``);
2. checks that none of the given keys (idempotency markers) exists;
3. only then runs every recorded command. A command whose arguments are all text or numbers
   travels as one JSON array (``json_command``; the script decodes it with Redis's ``cjson``),
   one with bytes as its argument count and its arguments.

Scripts run atomically and reach the appendonly file as one unit, so a detection is stored
completely or not at all, and two concurrent redeliveries of one event cannot both be queued.
WATCH/MULTI gives the same guarantee in three round trips; this takes one, which is most of the
ingest latency on loopback. The charge rides along so that accepting a request costs that one
round trip and no other (README, "Benchmarks": 3% of a single request's instructions, and the
system calls and thread switches of a second round trip under load).

Durability rests on Redis's ``appendfsync always``: Redis writes and fsyncs the script's effects
before it replies, so an answered request survives a SIGKILL of Redis at any instant.

Standalone Redis only: the script touches keys it is not given in KEYS, which Redis Cluster forbids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson
from redis import Redis
from redis.client import Pipeline

from detection_api.store.held_script import HeldScript

# The limits library's acquire script, unchanged: as the body of a Lua function whose parameters
# shadow the script's KEYS and ARGV, it decides each charge exactly as the library would.
_ACQUIRE_SLIDING_WINDOW = (
    files("limits.resources.redis.lua_scripts")
    .joinpath("acquire_sliding_window.lua")
    .read_text(encoding="utf-8")
)

_WRITE_IF_ABSENT = f"""
local function acquire_sliding_window(KEYS, ARGV)
{_ACQUIRE_SLIDING_WINDOW}
end
local pos = 2
for charge = 1, tonumber(ARGV[1]) do
  if not acquire_sliding_window({{ARGV[pos], ARGV[pos + 1]}},
                                {{ARGV[pos + 2], ARGV[pos + 3], ARGV[pos + 4]}}) then
    return {{-charge}}
  end
  pos = pos + 5
end
local existing = {{}}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then existing[#existing + 1] = i end
end
if #existing > 0 then return existing end
local commands = tonumber(ARGV[pos])
pos = pos + 1
for _ = 1, commands do
  local head = ARGV[pos]
  if string.byte(head, 1) == 91 then  -- '[': the command's arguments as one JSON array of text
    redis.call(unpack(cjson.decode(head)))
    pos = pos + 1
  else  -- the argument count, then the arguments as they are
    local argc = tonumber(head)
    redis.call(unpack(ARGV, pos + 1, pos + argc))
    pos = pos + argc + 1
  end
end
return existing
"""


def json_command(command: Sequence[Any]) -> bytes | None:
    """A recorded command as one JSON array of its arguments' text, as redis-py would send them
    (``repr`` of numbers), for the script to decode with Redis's ``cjson``; None when an argument
    is anything else (bytes, such as a job's compressed data, go as arguments of their own).

    One argument per command instead of one per field: a list of 100 detections sends about 400
    arguments instead of 3,700, and packing each argument of the EVALSHA was the larger cost
    (780 us against 160 us for 100 records, ``orjson`` included). A command of text alone (the
    records', which ``records.write_new`` writes as text) goes as it is, without the per-argument
    conversion."""
    texts: Sequence[Any]
    try:
        # Joining is the check: it raises TypeError unless every argument is text, in a quarter
        # of the time ``set(map(type, command))`` took for a record's 30 arguments.
        "".join(command)
        texts = command
    except TypeError:
        texts = []
        for arg in command:
            kind = type(arg)
            if kind is str:
                texts.append(arg)
            elif kind is int or kind is float:
                texts.append(repr(arg))
            else:
                return None
    try:
        return orjson.dumps(texts)
    except orjson.JSONEncodeError:  # a lone surrogate: redis-py's encoder raises its own error
        return None


@dataclass(frozen=True, slots=True)
class WindowCharge:
    """One rule's sliding-window charge: the ``limits`` storage keys of the window pair, the
    rule's limit and window length, and the amount to take (app/security.py builds these)."""

    previous_key: str
    current_key: str
    limit: int
    expiry_seconds: int
    amount: int


class RateLimited(Exception):
    """A charge was refused: nothing was written. ``index`` is the refused charge's position."""

    def __init__(self, index: int) -> None:
        super().__init__(f"rate-limit charge {index} was refused")
        self.index = index


class AtomicWriter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = HeldScript(redis, _WRITE_IF_ABSENT)

    def recorder(self) -> Pipeline:
        """A pipeline to record commands into; pass it to ``write_if_absent`` (never execute it)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.multi()  # rq's enqueue expects a pipeline in MULTI mode; nothing is sent either way
        return pipe

    def write_if_absent(
        self,
        keys: Sequence[str],
        recorded: Pipeline,
        charges: Sequence[WindowCharge] = (),
    ) -> list[int]:
        """Take ``charges``, then run the recorded commands if none of ``keys`` exists. Returns
        the 0-based indexes of the keys that already exist (then nothing was written; the charges
        were taken), or [] after writing. Raises ``RateLimited`` when a charge is refused (then
        nothing was written, and the charges before the refused one were taken, as the library
        takes them rule by rule)."""
        args: list[Any] = [len(charges)]
        for charge in charges:
            args += [
                charge.previous_key,
                charge.current_key,
                charge.limit,
                charge.expiry_seconds,
                charge.amount,
            ]
        args.append(len(recorded.command_stack))
        for command_args, _options in recorded.command_stack:
            packed = json_command(command_args)
            if packed is not None:
                args.append(packed)
            else:
                args.append(len(command_args))
                args.extend(command_args)  # packed as redis-py packs them, with the EVALSHA
        recorded.reset()
        existing = self._script(keys, args)
        if existing and int(existing[0]) < 0:
            raise RateLimited(-int(existing[0]) - 1)
        return [int(i) - 1 for i in existing]

    def charge(self, charges: Sequence[WindowCharge]) -> None:
        """Take ``charges`` alone (a request rejected before its write still pays); raises
        ``RateLimited`` like ``write_if_absent``."""
        if charges:
            self.write_if_absent([], self.recorder(), charges)
