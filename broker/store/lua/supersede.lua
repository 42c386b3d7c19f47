-- Record a document unless a newer one of its kind is recorded, atomically: a newer
-- document supersedes an older one, an older one presented later is refused and the very
-- same one again changes nothing.
-- KEYS[1] peer        the hash holding the watermark ('<issued_at>|<id>')
-- KEYS[2] target      where the document's facts go (a hash field or a string)
-- ARGV[1] watermark   the watermark's field in KEYS[1]
-- ARGV[2] issued_at   the document's issue time (ms)
-- ARGV[3] id          the document's id
-- ARGV[4] mode        'hash' (KEYS[2] is a hash) or 'string'
-- ARGV[5] field       the field of KEYS[2] in hash mode
-- ARGV[6] value       the document's facts
-- ARGV[7] expires_ms  when KEYS[2] expires, in string mode (PXAT)
-- ARGV[8] reset       a field of KEYS[1] to reset to 0 for a new document ('' for none)
-- Returns ok | same | superseded.
local mark = redis.call('HGET', KEYS[1], ARGV[1])
if mark then
  local sep = string.find(mark, '|', 1, true)
  if string.sub(mark, sep + 1) == ARGV[3] then return 'same' end
  if tonumber(ARGV[2]) <= tonumber(string.sub(mark, 1, sep - 1)) then return 'superseded' end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
if ARGV[4] == 'hash' then
  redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
else
  redis.call('SET', KEYS[2], ARGV[6], 'PXAT', ARGV[7])
end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], ARGV[8], 0) end
return 'ok'
