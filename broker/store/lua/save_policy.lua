-- Put a policy in force as the next version, atomically, with its history entry: two
-- operators saving at once get two versions rather than one lost update.
-- KEYS[1] policy    the policy in force (JSON with its version)
-- KEYS[2] history   newest first, the last 10,000 versions
-- ARGV[1] content   the policy JSON without its version
-- ARGV[2] who
-- ARGV[3] why
-- ARGV[4] now_ms
-- Returns the version assigned.
-- Version 1 is the built-in default, in force until the first change.
local version = 2
local current = redis.call('GET', KEYS[1])
if current then version = cjson.decode(current)['version'] + 1 end
local policy = cjson.decode(ARGV[1])
policy['version'] = version
local encoded = cjson.encode(policy)
redis.call('SET', KEYS[1], encoded)
redis.call('LPUSH', KEYS[2], cjson.encode({
  version = version, who = ARGV[2], why = ARGV[3], at_ms = tonumber(ARGV[4]), policy = policy
}))
redis.call('LTRIM', KEYS[2], 0, 9999)
return version
