-- Count an outcome report, atomically (runs after decay.lua): add praise or blame from
-- one counterparty organisation to the subject's decayed counts, capped, and bill the
-- subject's vouchers for the blame actually added. What to add, the cap and each
-- voucher's liability are decided in Python (broker/core/report_effects.py); this script
-- applies them in one step. What one organisation can add is capped (the allowance
-- decays with the count it feeds), so no single counterparty can farm or sink a
-- reputation. Adding to several counts (a failure also counts in its domain) uses the
-- allowance once per count.
-- KEYS[1] peer          the subject's hash
-- KEYS[2] pairs         organisation -> '<allowance used>,<ms>' (praise or blame)
-- KEYS[3], KEYS[4]...   each billed voucher's hash
-- ARGV[1] report        JSON: org (the reporter's organisation), amount (to add to each
--                       count, before the cap), now_ms, half_life_ms (of the counts and
--                       of the allowance), cap (the most one organisation may have
--                       added, decayed), fields ([value field, instant field, ...] of
--                       the counts to add to), rates (failure units per unit added, one
--                       per voucher key, in order), voucher_fields ([value field,
--                       instant field] of a voucher's failure count)
-- Returns what was added to each count (text).
local r = cjson.decode(ARGV[1])
local now, half = r.now_ms, r.half_life_ms
local pair = redis.call('HGET', KEYS[2], r.org)
local used = 0
if pair then
  local v, at = string.match(pair, '^([^,]*),(.*)$')
  used = decayed(tonumber(v), tonumber(at), now, half)
end
local counts = #r.fields / 2
local add = math.min(r.amount, math.max(0, r.cap - used) / counts)
if add <= 0 then return '0' end
redis.call('HSET', KEYS[2], r.org, tostring(used + add * counts) .. ',' .. now)
local function fold(key, field, instant, amount)
  local value = tonumber(redis.call('HGET', key, field) or '0')
  local at = tonumber(redis.call('HGET', key, instant) or now)
  redis.call('HSET', key, field, tostring(decayed(value, at, now, half) + amount),
             instant, math.max(now, at))
end
for i = 1, #r.fields, 2 do
  fold(KEYS[1], r.fields[i], r.fields[i + 1], add)
end
for i, rate in ipairs(r.rates) do
  fold(KEYS[2 + i], r.voucher_fields[1], r.voucher_fields[2], add * rate)
end
return tostring(add)
