"""Lua for the claim lists shared by the forwarder and the notifier: ids move between a queue list
and a processing list atomically, so at every instant an id is in exactly one of them."""

UNPACK_CHUNK = 1000  # Lua's unpack() has a stack limit; push in slices

# KEYS: queue, processing. ARGV: max ids. The head of the queue to the tail of processing, in order.
MOVE_HEAD = f"""
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
