-- Take a challenge, single use: whoever takes it first gets it, nobody else ever does.
-- KEYS[1] pending     every pending challenge key (see issue_challenge.lua)
-- KEYS[2] challenge   this challenge
-- Returns '<agent>|<expires ms>', or false when unknown or used.
local value = redis.call('GET', KEYS[2])
if not value then return false end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], KEYS[2])
return value
