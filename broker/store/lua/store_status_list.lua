-- Keep another broker's status list unless a newer one is stored.
-- KEYS[1] lists          '<issuer>|<list id>' -> list JSON (with valid_from_ms)
-- ARGV[1] list           '<issuer>|<list id>'
-- ARGV[2] valid_from_ms  the list's validFrom
-- ARGV[3] value          the list JSON
-- Returns 1 when stored, else 0.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(cjson.decode(current)['valid_from_ms']) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
