-- Fold time decay into one of a peer's decayed counts and add to it, atomically (runs
-- after decay.lua). The count's instant only moves forward.
-- KEYS[1] peer       the peer's hash
-- ARGV[1] value      the count's value field
-- ARGV[2] at         the count's instant field (ms it was last folded)
-- ARGV[3] amount     what to add
-- ARGV[4] now_ms
-- ARGV[5] half_life  ms
-- Returns the new value.
local now, half = tonumber(ARGV[4]), tonumber(ARGV[5])
local value = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local at = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or ARGV[4])
value = decayed(value, at, now, half) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], tostring(value), ARGV[2], math.max(now, at))
return tostring(value)
