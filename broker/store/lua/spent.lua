-- The rolling 24 h spend, dropping what fell out of the window.
-- KEYS[1] spend   sorted set of '<message id>:<amount>' scored by ms (see reserve_spend.lua)
-- ARGV[1] now_ms
-- Returns the total in reference minor units.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - 86400000)
local total = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + tonumber(string.match(member, ':(%d+)$'))
end
return total
