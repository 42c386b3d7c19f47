-- Claim the one final review decision on a trace, atomically.
-- KEYS[1] review     the trace's review record (JSON with state, action, token)
-- ARGV[1] record     the new record (JSON)
-- ARGV[2] take_over  '1': a claim left 'pending' by an interrupted reviewer may be replaced
-- ARGV[3] ttl_ms     how long the record is kept
-- ARGV[4] replaces   an action the new decision may supersede once done ('' for none)
-- Returns false when this call claimed it, else the record already there.
local current = redis.call('GET', KEYS[1])
if current then
  local earlier = cjson.decode(current)
  local stale = ARGV[2] == '1' and earlier['state'] == 'pending'
  local superseded = ARGV[4] ~= '' and earlier['action'] == ARGV[4] and earlier['state'] == 'done'
  if not (stale or superseded) then return current end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return false
