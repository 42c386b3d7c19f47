-- Issue a handshake challenge. One agent (login) holds at most ARGV[5] pending
-- challenges: a hello beyond that drops the agent's oldest (the agent is never locked
-- out, and never locks anyone else out); the global bound ARGV[4] is the last resort.
-- Answered challenges leave the agent's set lazily here (it holds at most ARGV[5]
-- members, so the sweep is short).
-- KEYS[1] pending     every pending challenge key, scored by expiry
-- KEYS[2] challenge   this challenge: '<agent>|<expires ms>'
-- KEYS[3] of_agent    the agent's pending challenge keys, scored by expiry
-- ARGV[1] now_ms
-- ARGV[2] expires_ms
-- ARGV[3] agent
-- ARGV[4] max_pending
-- ARGV[5] max_per_agent
-- Returns ok | replaced (the agent's oldest was dropped) | busy (nothing issued).
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if redis.call('EXISTS', member) == 0 then redis.call('ZREM', KEYS[3], member) end
end
local result = 'ok'
while redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) do
  local oldest = redis.call('ZPOPMIN', KEYS[3])[1]
  redis.call('DEL', oldest)
  redis.call('ZREM', KEYS[1], oldest)
  result = 'replaced'
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 'busy' end
redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[2], KEYS[2])
redis.call('PEXPIREAT', KEYS[3], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3] .. '|' .. ARGV[2], 'PXAT', ARGV[2])
return result
