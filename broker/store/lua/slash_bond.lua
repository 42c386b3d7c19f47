-- Slash the recorded bond, atomically, so two slashes never undo each other.
-- KEYS[1] peer      the peer's hash (field bond: the bond JSON, bond_cut: slashed so far)
-- ARGV[1] amount    minor units to cut
-- ARGV[2] fraction  fraction of what is held to cut as well
-- Returns what is left held (0 without a bond).
local raw = redis.call('HGET', KEYS[1], 'bond')
if not raw then return 0 end
local amount = cjson.decode(raw)['amount_minor']
local held = amount - tonumber(redis.call('HGET', KEYS[1], 'bond_cut') or '0')
if held <= 0 then return 0 end
local cut = math.min(held, tonumber(ARGV[1]) + math.floor(held * tonumber(ARGV[2])))
redis.call('HINCRBY', KEYS[1], 'bond_cut', cut)
return held - cut
