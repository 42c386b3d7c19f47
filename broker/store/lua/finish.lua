-- After a committed outcome, atomically: mark the claim done, remember a delivery for the
-- report window, move the sender's behaviour windows and put it under observation when a
-- detector trips, and write the decision log entry and the flight recorder.
-- KEYS[1] seen        the id's claim (see claim.lua)
-- KEYS[2] peer        the sender's hash (clean streak, behaviour windows, anomaly)
-- KEYS[3] delivered   '<sender>|<recipient>|<ms>|<domain>' of a delivered message
-- KEYS[4] recipients  the recipients the sender has messaged
-- KEYS[5] decisions   the decision log (a stream)
-- KEYS[6] trace       the decision's flight-recorder entry
-- KEYS[7] trace_of    message id -> trace id
-- ARGV[1] message     JSON: digest, outcome, clean, delivered ('' when not delivered),
--                     now_ms, size, recipient, gate_failed, outside_manifest, trace_id,
--                     report_window_ms, trace_ttl_ms, decision_log_max
-- ARGV[2] limits      JSON: the policy's behaviour model (broker/policy.py BehaviorModel)
--                     under its own field names
-- ARGV[3] entry       the decision log entry (JSON, passed as is)
-- ARGV[4] record      the flight-recorder entry (JSON, passed as is)
-- Returns the anomaly that put the sender under observation, or ''.
local msg, limit = cjson.decode(ARGV[1]), cjson.decode(ARGV[2])
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(msg.digest)) == msg.digest then
  redis.call('SET', KEYS[1], msg.digest .. '|done|' .. msg.outcome, 'KEEPTTL')
end
if msg.delivered ~= '' then
  redis.call('SET', KEYS[3], msg.delivered, 'PX', msg.report_window_ms)
end
local peer, now = KEYS[2], msg.now_ms
local function num(field) return tonumber(redis.call('HGET', peer, field) or '0') end
if msg.clean then redis.call('HINCRBY', peer, 'clean', 1) end
local anomaly = false

-- velocity against the sender's own per-minute baseline. Windows only move forward:
-- concurrent decisions (and several routers) finish slightly out of order around a
-- boundary, and a late one counts in the current window instead of reopening the last.
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
local count = redis.call('HINCRBY', peer, 'rate_n', 1)
if num('rate_minutes') >= limit.baseline_minutes
   and count > math.max(limit.rate_floor_per_minute,
                        limit.rate_spike_factor * num('rate_ewma')) then
  anomaly = 'velocity_spike'
end

-- fan-out to recipients never messaged before
local hour = math.floor(now / 3600000)
if hour > num('fan_hour') then redis.call('HSET', peer, 'fan_hour', hour, 'fan_new', 0) end
if redis.call('SADD', KEYS[4], msg.recipient) == 1 then
  if redis.call('HINCRBY', peer, 'fan_new', 1) > limit.new_recipients_per_hour then
    anomaly = 'fan_out'
  end
end

-- payload size drift
local size, n = msg.size, num('size_n')
local size_limit = math.max(limit.size_floor_bytes, limit.size_factor * num('size_ewma'))
if n >= limit.size_baseline_messages and size > size_limit then
  anomaly = 'payload_drift'
end
local ewma_size = size
if n > 0 then ewma_size = 0.9 * num('size_ewma') + 0.1 * size end
redis.call('HSET', peer, 'size_ewma', tostring(ewma_size), 'size_n', n + 1)

-- repeated gate failures and capability drift in a window
local window = math.floor(now / limit.window_ms)
if window > num('win') then redis.call('HSET', peer, 'win', window, 'gf_n', 0, 'od_n', 0) end
if msg.gate_failed and redis.call('HINCRBY', peer, 'gf_n', 1) >= limit.gate_failure_limit then
  anomaly = 'gate_failures'
end
if msg.outside_manifest
   and redis.call('HINCRBY', peer, 'od_n', 1) >= limit.outside_manifest_limit then
  anomaly = 'capability_drift'
end

if anomaly then
  redis.call('HSET', peer, 'anomaly', now, 'clean', 0, 'anomaly_reason', anomaly)
end

-- decision log and flight recorder
redis.call('XADD', KEYS[5], 'MAXLEN', '~', msg.decision_log_max, '*', 'e', ARGV[3])
redis.call('SET', KEYS[6], ARGV[4], 'PX', msg.trace_ttl_ms)
redis.call('SET', KEYS[7], msg.trace_id, 'PX', msg.trace_ttl_ms)
return anomaly or ''
