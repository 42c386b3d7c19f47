-- Check and add a payment to the rolling 24 h spend in one step, so routers cannot race
-- past the cap.
-- KEYS[1] spend    sorted set of '<message id>:<amount>' scored by ms
-- ARGV[1] now_ms
-- ARGV[2] amount   reference minor units
-- ARGV[3] cap      reference minor units
-- ARGV[4] member   the message id
-- Returns the new 24 h total, or -1 (nothing added) when it would pass the cap.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
local total = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + tonumber(string.match(member, ':(%d+)$'))
end
if total + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], 86400000)
return total + tonumber(ARGV[2])
