-- File a serious report for review, atomically bounded per reporter and folded per
-- (organisation, subject) pair, so a slanderer cannot flood the queue.
-- KEYS[1] items        item id -> item JSON
-- KEYS[2] open         open item ids, scored by ms
-- KEYS[3] by_reporter  reporter -> items open
-- KEYS[4] by_pair      '<organisation>|<subject>' -> its open item id
-- ARGV[1] id
-- ARGV[2] item         JSON
-- ARGV[3] now_ms
-- ARGV[4] reporter
-- ARGV[5] max          items one reporter may have open
-- ARGV[6] pair         '<organisation>|<subject>'
-- Returns 1 filed, 2 folded into the pair's open item (its `repeats` + 1), 0 over the bound.
local existing = redis.call('HGET', KEYS[4], ARGV[6])
if existing and redis.call('ZSCORE', KEYS[2], existing) then
  local item = cjson.decode(redis.call('HGET', KEYS[1], existing))
  item['repeats'] = (tonumber(item['repeats']) or 0) + 1
  redis.call('HSET', KEYS[1], existing, cjson.encode(item))
  return 2
end
local open = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0')
if open >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
redis.call('HSET', KEYS[4], ARGV[6], ARGV[1])
return 1
