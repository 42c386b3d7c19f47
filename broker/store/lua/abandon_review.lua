-- Drop a review claim whose action never happened, unless another claim replaced it.
-- KEYS[1] review   the trace's review record (see claim_review.lua)
-- ARGV[1] token    the token of the claim to drop
-- Returns 0.
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['token'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
