-- Rotate a key: move the old key's history to the new one and revoke the old, atomically.
-- History moves only along a link both keys signed (the caller verified it) and never
-- onto a key that already has a history of its own.
-- KEYS[1] old_peer   the old key's hash
-- KEYS[2] new_peer   the new key's hash
-- ARGV[1] old        the old DID
-- ARGV[2] new        the new DID
-- Returns ok | old_revoked | new_in_use.
if redis.call('HGET', KEYS[1], 'revoked') == '1' then return 'old_revoked' end
for _, field in ipairs({'succ', 'fail', 'anomaly', 'rotated_from', 'revoked'}) do
  if redis.call('HEXISTS', KEYS[2], field) == 1 then return 'new_in_use' end
end
if tonumber(redis.call('HGET', KEYS[2], 'clean') or '0') > 0 then return 'new_in_use' end
for _, field in ipairs({'succ', 'succ_at', 'fail', 'fail_at', 'clean', 'anomaly'}) do
  local value = redis.call('HGET', KEYS[1], field)
  if value then redis.call('HSET', KEYS[2], field, value) end
end
redis.call('HSET', KEYS[2], 'rotated_from', ARGV[1])
redis.call('HSET', KEYS[1], 'revoked', '1', 'rotated_to', ARGV[2])
return 'ok'
