-- The decay rule of broker/state.py (DecayedCount.at), for the scripts that fold it into
-- a count atomically; it runs ahead of them (lua_script('decay', <script>)). A count halves
-- every half-life and never grows when the clocks disagree (an instant after now counts as
-- now). tests/integration/test_store_decay.py checks that Redis folds as DecayedCount does.
local function decayed(value, at, now, half)
  return value * math.pow(0.5, math.max(0, now - at) / half)
end
