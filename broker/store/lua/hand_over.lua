-- Hand a pending claim from one holder to another.
-- KEYS[1] seen      the id's claim (see claim.lua)
-- ARGV[1] digest    SHA-256 of the message bytes
-- ARGV[2] expected  the holder the caller resolved ('' matches a claim without one)
-- ARGV[3] holder    the new holder ('' releases the claim)
-- Returns ok | done | replay | 'held|<holder>' (someone else holds it now) | gone.
-- With holder = expected it only reports the state (is it still held by expected?)
-- and writes nothing.
local current = redis.call('GET', KEYS[1])
if not current then return 'gone' end
local digest, state, first, holder = string.match(current, '^([^|]*)|(%a+)|([^|]*)|?(.*)$')
if digest ~= ARGV[1] then return 'replay' end
if state == 'done' then return 'done' end
if holder ~= ARGV[2] then return 'held|' .. holder end
if ARGV[3] == ARGV[2] then return 'ok' end
redis.call('SET', KEYS[1], digest .. '|pending|' .. first .. '|' .. ARGV[3], 'KEEPTTL')
return 'ok'
