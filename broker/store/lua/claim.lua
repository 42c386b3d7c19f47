-- Claim a message id and its (sender, nonce) for one router session.
-- KEYS[1] seen      the id's claim: '<digest>|pending|<first ms>|<holder>' or '<digest>|done|<outcome>'
-- KEYS[2] nonce     the sender's nonce, used once
-- ARGV[1] digest    SHA-256 of the message bytes
-- ARGV[2] ttl_ms    how long a claim (and the nonce) is kept
-- ARGV[3] redelivered  '1' when RabbitMQ redelivered this copy
-- ARGV[4] now_ms    the claim time of a new message
-- ARGV[5] holder    the claiming session ('<session>@<node>')
-- Returns new | done | copy | replay | 'retry|<first ms>|<holder>' (the holder as it
-- was: a retry takes the claim over only once the holder cannot commit any more).
local current = redis.call('GET', KEYS[1])
if current then
  local digest, state, rest = string.match(current, '^([^|]*)|(%a+)|?(.*)$')
  if digest ~= ARGV[1] then return 'replay' end
  if state == 'done' then return 'done' end
  if ARGV[3] ~= '1' then return 'copy' end
  return 'retry|' .. rest
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'replay' end
redis.call('SET', KEYS[1], ARGV[1] .. '|pending|' .. ARGV[4] .. '|' .. ARGV[5], 'PX', ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 'new'
