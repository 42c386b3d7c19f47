-- Close an open serious-report item, once.
-- KEYS[1] items        item id -> item JSON (see serious_open.lua)
-- KEYS[2] open         open item ids
-- KEYS[3] by_reporter  reporter -> items open
-- KEYS[4] by_pair      '<organisation>|<subject>' -> its open item id
-- ARGV[1] id
-- ARGV[2] item         the closed item JSON
-- ARGV[3] reporter
-- ARGV[4] pair         '<organisation>|<subject>'
-- Returns 1 when this call closed it, else 0.
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[3]) end
if redis.call('HGET', KEYS[4], ARGV[4]) == ARGV[1] then redis.call('HDEL', KEYS[4], ARGV[4]) end
return 1
