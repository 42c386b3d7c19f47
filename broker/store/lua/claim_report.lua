-- Accept an outcome report once, from the recipient of a delivered message, about its
-- sender: the check and the mark are one step, so two copies of a report count once.
-- KEYS[1] delivered  '<sender>|<recipient>|<ms>|<domain>' written by finish.lua
-- KEYS[2] reported   the mark that the message was reported on
-- ARGV[1] reporter   the DID reporting
-- ARGV[2] subject    the DID reported on
-- ARGV[3] window_ms  how long the report window (and the mark) lasts
-- Returns 'ok|<domain of the reported message>' or the refusal code:
-- report_unknown_message | report_not_recipient | report_wrong_subject | report_duplicate.
local delivered = redis.call('GET', KEYS[1])
if not delivered then return 'report_unknown_message' end
local sender, recipient, kind = string.match(delivered, '^([^|]*)|([^|]*)|[^|]*|?(.*)$')
if recipient ~= ARGV[1] then return 'report_not_recipient' end
if sender ~= ARGV[2] then return 'report_wrong_subject' end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[3]) then return 'report_duplicate' end
return 'ok|' .. (kind or '')
