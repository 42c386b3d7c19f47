-- A high or critical report: count the independent organisations that reported such
-- misbehaviour about the subject within the window, and decide, atomically, whether
-- this report is the one that corroborates it.
-- KEYS[1] serious_orgs  organisation -> ms of its latest such report; '_acted' -> ms of the
--                       last corroboration
-- ARGV[1] organisation  the reporter's organisation
-- ARGV[2] now_ms
-- ARGV[3] window_ms     how long a report counts
-- ARGV[4] needed        organisations needed to corroborate
-- Returns 'corroborated' the first time enough agree within a window (observation and a
-- slash), 'again' for every later corroborated report in that window (observation again,
-- no second slash: a peer that resumes after its observation is caught again), else
-- 'pending' (a reviewer decides).
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], now)
local orgs = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if fields[i] ~= '_acted' then
    if now - tonumber(fields[i + 1]) <= window then orgs = orgs + 1
    else redis.call('HDEL', KEYS[1], fields[i]) end
  end
end
redis.call('PEXPIRE', KEYS[1], window)
if orgs < tonumber(ARGV[4]) then return 'pending' end
local acted = tonumber(redis.call('HGET', KEYS[1], '_acted') or '-1')
if acted >= 0 and now - acted <= window then return 'again' end
redis.call('HSET', KEYS[1], '_acted', now)
return 'corroborated'
