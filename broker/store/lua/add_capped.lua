-- Add praise or blame from one counterparty organisation to a peer's decayed counts,
-- capped, atomically (runs after decay.lua). What one organisation can add is capped (the
-- allowance decays with the count it feeds), so no single counterparty can farm or sink a
-- reputation. Adding to several counts (a failure also counts in its domain) uses the
-- allowance once per count.
-- KEYS[1] peer          the peer's hash
-- KEYS[2] pairs         organisation -> '<allowance used>,<ms>' (praise or blame)
-- ARGV[1] organisation
-- ARGV[2] amount        what to add to each count, before the cap
-- ARGV[3] now_ms
-- ARGV[4] half_life     ms, of the counts and of the allowance
-- ARGV[5] cap           the most one organisation may have added (decayed)
-- ARGV[6], ARGV[7]...   pairs of (value field, instant field) of the counts to add to
-- Returns what was added to each count.
local now, half = tonumber(ARGV[3]), tonumber(ARGV[4])
local pair = redis.call('HGET', KEYS[2], ARGV[1])
local used = 0
if pair then
  local v, at = string.match(pair, '^([^,]*),(.*)$')
  used = decayed(tonumber(v), tonumber(at), now, half)
end
local counts = (#ARGV - 5) / 2
local add = math.min(tonumber(ARGV[2]), math.max(0, tonumber(ARGV[5]) - used) / counts)
if add <= 0 then return '0' end
redis.call('HSET', KEYS[2], ARGV[1], tostring(used + add * counts) .. ',' .. now)
for i = 6, #ARGV, 2 do
  local value = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  local at = tonumber(redis.call('HGET', KEYS[1], ARGV[i + 1]) or ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[i], tostring(decayed(value, at, now, half) + add),
             ARGV[i + 1], math.max(now, at))
end
return tostring(add)
