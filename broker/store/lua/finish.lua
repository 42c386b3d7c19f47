-- After a committed outcome, atomically: mark the claim done, remember a delivery for the
-- report window, count the message in the sender's behaviour windows, and write the
-- decision log entry and the flight recorder. The detectors that judge those counts are
-- Python (broker/core/behavior.py); an anomaly they find is marked by the caller.
-- KEYS[1] seen        the id's claim (see claim.lua)
-- KEYS[2] peer        the sender's hash (clean streak, behaviour windows, anomaly)
-- KEYS[3] delivered   '<sender>|<recipient>|<ms>|<domain>' of a delivered message
-- KEYS[4] recipients  the recipients the sender has messaged
-- KEYS[5] decisions   the decision log (a stream)
-- KEYS[6] trace       the decision's flight-recorder entry
-- KEYS[7] trace_of    message id -> trace id
-- ARGV[1] message     JSON: digest, outcome ('<action>|<recipient>', kept in the claim),
--                     clean, delivered ('' when not delivered), now_ms, size, recipient,
--                     gate_failed, outside_manifest, trace_id, window_ms (the behaviour
--                     model's window for gate failures and messages outside the
--                     manifest), report_window_ms, trace_ttl_ms, decision_log_max
-- ARGV[2] entry       the decision log entry (JSON, passed as is)
-- ARGV[3] record      the flight-recorder entry (JSON, passed as is)
-- Returns the counts with this message in them: {messages this minute, minutes in the
-- per-minute baseline, its EWMA (text), 1 if the recipient is new, new recipients this
-- hour, messages in the size baseline before this one, their size EWMA (text), gate
-- failures this window (0 unless this one failed), messages outside the manifest this
-- window (0 unless this one is)}. EWMAs come back as the stored text: Redis would
-- truncate a Lua number to an integer.
local msg = cjson.decode(ARGV[1])
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(msg.digest)) == msg.digest then
  redis.call('SET', KEYS[1], msg.digest .. '|done|' .. msg.outcome, 'KEEPTTL')
end
if msg.delivered ~= '' then
  redis.call('SET', KEYS[3], msg.delivered, 'PX', msg.report_window_ms)
end
local peer, now = KEYS[2], msg.now_ms
local function num(field) return tonumber(redis.call('HGET', peer, field) or '0') end
local function raw(field) return redis.call('HGET', peer, field) or '0' end
if msg.clean then redis.call('HINCRBY', peer, 'clean', 1) end

-- This script only counts; whether the counts are an anomaly is judged in Python
-- (broker/core/behavior.py) from what it returns.
-- Messages per minute, with an EWMA of past minutes as the sender's own baseline.
-- Windows only move forward: concurrent decisions (and several routers) finish slightly
-- out of order around a boundary, and a late one counts in the current window instead
-- of reopening the last.
local minute = math.floor(now / 60000)
if minute > num('rate_min') then
  local minutes = num('rate_minutes')
  if num('rate_min') > 0 then
    local ewma = num('rate_ewma')
    local seen = num('rate_n')
    if minutes == 0 then ewma = seen else ewma = 0.8 * ewma + 0.2 * seen end
    redis.call('HSET', peer, 'rate_ewma', tostring(ewma), 'rate_minutes', minutes + 1)
  end
  redis.call('HSET', peer, 'rate_min', minute, 'rate_n', 0)
end
local rate_n = redis.call('HINCRBY', peer, 'rate_n', 1)

-- recipients never messaged before, per hour
local hour = math.floor(now / 3600000)
if hour > num('fan_hour') then redis.call('HSET', peer, 'fan_hour', hour, 'fan_new', 0) end
local new_recipient, fan_new = 0, num('fan_new')
if redis.call('SADD', KEYS[4], msg.recipient) == 1 then
  new_recipient, fan_new = 1, redis.call('HINCRBY', peer, 'fan_new', 1)
end

-- payload size: an EWMA of the sender's sizes (judged before this one joins it)
local size, size_n, size_ewma = msg.size, num('size_n'), raw('size_ewma')
local ewma_size = size
if size_n > 0 then ewma_size = 0.9 * tonumber(size_ewma) + 0.1 * size end
redis.call('HSET', peer, 'size_ewma', tostring(ewma_size), 'size_n', size_n + 1)

-- gate failures and messages outside the sender's manifest, per window
local window = math.floor(now / msg.window_ms)
if window > num('win') then redis.call('HSET', peer, 'win', window, 'gf_n', 0, 'od_n', 0) end
local gf_n, od_n = 0, 0
if msg.gate_failed then gf_n = redis.call('HINCRBY', peer, 'gf_n', 1) end
if msg.outside_manifest then od_n = redis.call('HINCRBY', peer, 'od_n', 1) end

-- decision log and flight recorder
redis.call('XADD', KEYS[5], 'MAXLEN', '~', msg.decision_log_max, '*', 'e', ARGV[2])
redis.call('SET', KEYS[6], ARGV[3], 'PX', msg.trace_ttl_ms)
redis.call('SET', KEYS[7], msg.trace_id, 'PX', msg.trace_ttl_ms)
return {rate_n, num('rate_minutes'), raw('rate_ewma'), new_recipient, fan_new,
        size_n, size_ewma, gf_n, od_n}
