"""Peer state in Redis: atomic updates (Lua), a bounded local cache, pub/sub invalidation.

Redis errors never leave this module: they become StoreUnavailable, on which the router
stops taking messages until the store answers again (fail closed, lose nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError

from broker.envelope import MESSAGE_KINDS, Envelope
from broker.errors import ConfigError, PolicyError, StoreUnavailable
from broker.policy import Policy, load_policy
from broker.reports import Report, domain_of, failure_units
from broker.state import (
    Attestation,
    Bond,
    Credential,
    ImportedRecord,
    IssuerRole,
    Manifest,
    PactTerms,
    PeerState,
    RecipientProfile,
    TrustContext,
    TrustList,
    Vouch,
)
from broker.store import codec
from broker.store.batch import AutoPipeline, Command
from broker.store.cache import TTLCache
from broker.store.federation import FederationStore
from broker.store.keys import Keys
from broker.store.lua import lua_script
from broker.store.serious import SeriousQueue

log = logging.getLogger(__name__)
T = TypeVar("T")
DAY_MS = 86_400_000


class Claim(StrEnum):
    """What the store knows about a message id when the router first sees it."""

    NEW = "new"  # never seen: process it
    RETRY = "retry"  # our own redelivery after a crash before its outcome was recorded
    DONE = "done"  # the same bytes again, outcome already committed: ack only
    COPY = "copy"  # the same bytes published again while the first copy is in flight
    REPLAY = "replay"  # the id or nonce was used before by a different message: block it


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claim, and for a retry when the message was first claimed and who holds it."""

    claim: Claim
    first_ms: int | None = None
    holder: str = ""


def _text(raw: Any) -> str:
    """A Redis reply as text (bytes decoded, anything else as str)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# The claim decides by the bytes, not by who sent them twice. Publishing the identical
# bytes again (a producer retrying after a lost confirm) is idempotent: while the first
# copy is in flight (`pending`) that copy is still on its queue or already committed, so
# this one is dropped (`copy`); once done, every copy is `done`. Only RabbitMQ's own
# redelivery of the claimed copy (`redelivered`) may route it again (`retry`), and only
# once its holder (the router session that claimed it) can no longer commit it
# (broker/indoubt.py). A different message reusing the id or the nonce is a `replay`.
# The pending record keeps when the message was first claimed: a retry is judged as of
# then, so time the broker lost (a paused router, a failover) is never clock skew.
_CLAIM = lua_script("claim")
_HAND_OVER = lua_script("hand_over")

# After a committed outcome: record it, remember deliveries for the report window, and
# update the sender's behaviour windows; flag an anomaly (observation) when one trips.
# KEYS: seen, peer, delivered, known recipients, decisions, trace, trace-of.
# ARGV: 1 digest, 2 outcome, 3 clean, 4 delivered value ('' if not delivered),
#   5 report window ms, 6 now, 7 size, 8 recipient, 9 gate failed, 10 outside manifest,
#   11 rate floor, 12 spike factor, 13 baseline minutes, 14 new recipients per hour,
#   15 size factor, 16 size floor, 17 size baseline n, 18 gate failure limit,
#   19 outside manifest limit, 20 window ms
_FINISH = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. '|done|' .. ARGV[2], 'KEEPTTL')
end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5]) end
local peer, now = KEYS[2], tonumber(ARGV[6])
local function num(field) return tonumber(redis.call('HGET', peer, field) or '0') end
if ARGV[3] == '1' then redis.call('HINCRBY', peer, 'clean', 1) end
local anomaly = false

-- velocity against the sender's own per-minute baseline. Windows only move forward:
-- concurrent decisions (and several routers) finish slightly out of order around a
-- boundary, and a late one counts in the current window instead of reopening the last.
local minute = math.floor(now / 60000)
if minute > num('rate_min') then
  local minutes = num('rate_minutes')
  if num('rate_min') > 0 then
    local ewma = num('rate_ewma')
    local seen = num('rate_n')
    if minutes == 0 then ewma = seen else ewma = 0.8 * ewma + 0.2 * seen end
    redis.call('HSET', peer, 'rate_ewma', tostring(ewma), 'rate_minutes', minutes + 1)
  end
  redis.call('HSET', peer, 'rate_min', minute, 'rate_n', 0)
end
local count = redis.call('HINCRBY', peer, 'rate_n', 1)
if num('rate_minutes') >= tonumber(ARGV[13])
   and count > math.max(tonumber(ARGV[11]), tonumber(ARGV[12]) * num('rate_ewma')) then
  anomaly = 'velocity_spike'
end

-- fan-out to recipients never messaged before
local hour = math.floor(now / 3600000)
if hour > num('fan_hour') then redis.call('HSET', peer, 'fan_hour', hour, 'fan_new', 0) end
if redis.call('SADD', KEYS[4], ARGV[8]) == 1 then
  if redis.call('HINCRBY', peer, 'fan_new', 1) > tonumber(ARGV[14]) then anomaly = 'fan_out' end
end

-- payload size drift
local size, n = tonumber(ARGV[7]), num('size_n')
local size_limit = math.max(tonumber(ARGV[16]), tonumber(ARGV[15]) * num('size_ewma'))
if n >= tonumber(ARGV[17]) and size > size_limit then
  anomaly = 'payload_drift'
end
local ewma_size = size
if n > 0 then ewma_size = 0.9 * num('size_ewma') + 0.1 * size end
redis.call('HSET', peer, 'size_ewma', tostring(ewma_size), 'size_n', n + 1)

-- repeated gate failures and capability drift in a window
local window = math.floor(now / tonumber(ARGV[20]))
if window > num('win') then redis.call('HSET', peer, 'win', window, 'gf_n', 0, 'od_n', 0) end
if ARGV[9] == '1' and redis.call('HINCRBY', peer, 'gf_n', 1) >= tonumber(ARGV[18]) then
  anomaly = 'gate_failures'
end
if ARGV[10] == '1' and redis.call('HINCRBY', peer, 'od_n', 1) >= tonumber(ARGV[19]) then
  anomaly = 'capability_drift'
end

if anomaly then
  redis.call('HSET', peer, 'anomaly', now, 'clean', 0, 'anomaly_reason', anomaly)
end

-- decision log and flight recorder
-- (KEYS 5-7; ARGV 21 entry, 22 trace, 23 ttl, 24 maxlen, 25 trace id)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[24], '*', 'e', ARGV[21])
redis.call('SET', KEYS[6], ARGV[22], 'PX', ARGV[23])
redis.call('SET', KEYS[7], ARGV[25], 'PX', ARGV[23])
return anomaly or ''
"""

# A report is accepted once, from the recipient of a delivered message, about its sender.
# KEYS: delivered, reported. ARGV: reporter, subject, window ms.
_CLAIM_REPORT = """
local delivered = redis.call('GET', KEYS[1])
if not delivered then return 'report_unknown_message' end
local sender, recipient, kind = string.match(delivered, '^([^|]*)|([^|]*)|[^|]*|?(.*)$')
if recipient ~= ARGV[1] then return 'report_not_recipient' end
if sender ~= ARGV[2] then return 'report_wrong_subject' end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[3]) then return 'report_duplicate' end
return 'ok|' .. (kind or '')
"""

# What one counterparty organisation can add to a peer, praise or blame, is capped (the
# allowance decays with the count it feeds), so no single counterparty can farm or sink
# a reputation. Adding to several counts (a failure also counts in its domain) uses the
# allowance once per count. KEYS: peer, pair hash (praise or blame). ARGV: 1
# organisation, 2 amount, 3 now, 4 half-life, 5 cap, then pairs of (value field, at
# field) to add the capped amount to. Returns what was added to each.
_ADD_CAPPED = """
local now, half = tonumber(ARGV[3]), tonumber(ARGV[4])
local function decayed(value, at) return value * math.pow(0.5, math.max(0, now - at) / half) end
local pair = redis.call('HGET', KEYS[2], ARGV[1])
local used = 0
if pair then
  local v, at = string.match(pair, '^([^,]*),(.*)$')
  used = decayed(tonumber(v), tonumber(at))
end
local counts = (#ARGV - 5) / 2
local add = math.min(tonumber(ARGV[2]), math.max(0, tonumber(ARGV[5]) - used) / counts)
if add <= 0 then return '0' end
redis.call('HSET', KEYS[2], ARGV[1], tostring(used + add * counts) .. ',' .. now)
for i = 6, #ARGV, 2 do
  local value = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  local at = tonumber(redis.call('HGET', KEYS[1], ARGV[i + 1]) or ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[i], tostring(decayed(value, at) + add), ARGV[i + 1],
             math.max(now, at))
end
return tostring(add)
"""

# A newer document of a kind supersedes an older one; an older one presented later is
# refused, and the very same one again changes nothing. KEYS: 1 hash holding the
# watermark, 2 where the document's facts go. ARGV: 1 watermark field, 2 issued_at, 3 id,
# 4 'hash' or 'string', 5 field (hash mode), 6 value, 7 expiry ms (string mode),
# 8 a field of KEYS[1] to reset to 0 for a new document ('' for none).
_SUPERSEDE = """
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
"""

# Slash the recorded bond, atomically (two slashes never undo each other).
# KEYS: peer. ARGV: amount minor, fraction of what is held. Returns what is left.
_SLASH = """
local raw = redis.call('HGET', KEYS[1], 'bond')
if not raw then return 0 end
local amount = cjson.decode(raw)['amount_minor']
local held = amount - tonumber(redis.call('HGET', KEYS[1], 'bond_cut') or '0')
if held <= 0 then return 0 end
local cut = math.min(held, tonumber(ARGV[1]) + math.floor(held * tonumber(ARGV[2])))
redis.call('HINCRBY', KEYS[1], 'bond_cut', cut)
return held - cut
"""

# A high or critical report: count the independent organisations that reported such
# misbehaviour about the subject within the window. KEYS: serious orgs of the subject.
# ARGV: organisation, now, window ms, organisations needed. Returns 'corroborated' the
# first time enough agree within a window (observation and a slash), 'again' for every
# later corroborated report in that window (observation again, no second slash: a peer
# that resumes after its observation is caught again), else 'pending' (a reviewer
# decides).
_CORROBORATE = """
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], now)
local orgs = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if fields[i] ~= '_acted' then
    if now - tonumber(fields[i + 1]) <= window then orgs = orgs + 1
    else redis.call('HDEL', KEYS[1], fields[i]) end
  end
end
redis.call('PEXPIRE', KEYS[1], window)
if orgs < tonumber(ARGV[4]) then return 'pending' end
local acted = tonumber(redis.call('HGET', KEYS[1], '_acted') or '-1')
if acted >= 0 and now - acted <= window then return 'again' end
redis.call('HSET', KEYS[1], '_acted', now)
return 'corroborated'
"""

# Fold time decay and add: KEYS: peer. ARGV: value field, at field, amount, now, half-life.
_ADD_DECAYED = """
local value = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local at = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or ARGV[4])
local now = tonumber(ARGV[4])
local elapsed = math.max(0, now - at)
value = value * math.pow(0.5, elapsed / tonumber(ARGV[5])) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], tostring(value), ARGV[2], math.max(now, at))
return tostring(value)
"""

# Rolling 24 h spend, check-and-add in one step so routers cannot race past the cap.
# KEYS: spend zset. ARGV: now, amount, cap, member. Members are "<id>:<amount>".
_RESERVE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
local total = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + tonumber(string.match(member, ':(%d+)$'))
end
if total + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], 86400000)
return total + tonumber(ARGV[2])
"""

_SPENT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - 86400000)
local total = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + tonumber(string.match(member, ':(%d+)$'))
end
return total
"""


# One agent holds at most ARGV[5] pending challenges: a hello beyond that drops the
# agent's oldest (the agent is never locked out, and never locks anyone else out); the
# global bound ARGV[4] is the last resort. Answered challenges leave the agent's set
# lazily here (it holds at most ARGV[5] members, so the sweep is short).
# KEYS: pending zset, challenge key, the agent's pending zset.
# ARGV: now, expires, agent, max pending, max pending per agent.
_ISSUE_CHALLENGE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if redis.call('EXISTS', member) == 0 then redis.call('ZREM', KEYS[3], member) end
end
local result = 'ok'
while redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) do
  local oldest = redis.call('ZPOPMIN', KEYS[3])[1]
  redis.call('DEL', oldest)
  redis.call('ZREM', KEYS[1], oldest)
  result = 'replaced'
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 'busy' end
redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[2], KEYS[2])
redis.call('PEXPIREAT', KEYS[3], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3] .. '|' .. ARGV[2], 'PXAT', ARGV[2])
return result
"""

# Single use: whoever takes the challenge first gets it, nobody else ever does.
_TAKE_CHALLENGE = """
local value = redis.call('GET', KEYS[2])
if not value then return false end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], KEYS[2])
return value
"""


# KEYS: old peer, new peer. History moves only along a link both keys signed.
_ROTATE = """
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
"""


# Next policy version, atomically, with its history entry. KEYS: policy, history.
# ARGV: content JSON (without version), who, why, now.
_SAVE_POLICY = """
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
"""


class Issued(StrEnum):
    """What became of a new handshake challenge."""

    OK = "ok"
    REPLACED = "replaced"  # issued; the agent's oldest pending challenge was dropped
    BUSY = "busy"  # the global bound: not issued


@dataclass(frozen=True)
class Finish:
    """What the router reports to the store once an outcome is committed."""

    outcome: str
    clean: bool
    delivered: bool
    size: int
    gate_failed: bool
    outside_manifest: bool
    trace_id: str = ""
    entry: bytes = b"{}"
    trace: bytes = b"{}"


@dataclass(frozen=True)
class ReportEffect:
    """What a report changed: the success weight or failure units it added after the
    per-organisation caps, and for a high or critical report the corroboration state:
    'corroborated' (enough independent organisations agree: act now), 'acted' (already
    acted on within the window), 'pending' (a security reviewer decides) or ''."""

    added: float
    serious: str = ""


@dataclass(frozen=True)
class Globals:
    """Deployment-wide sets every decision reads; cached like peers."""

    issuers: TrustList
    revoked_evidence: frozenset[str]


class RedisStore:
    """The PeerStateStore backed by Redis."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        *,
        cache_size: int = 100_000,
        cache_ttl_ms: int = 2_000,
        dedup_ttl_ms: int = 3_600_000,
        trace_ttl_ms: int = 86_400_000,
        decision_log_max: int = 100_000,
    ) -> None:
        self._redis, self._sentinels = connect_redis(url)
        self._replicated = url.startswith("redis+sentinel://")
        self.keys = keys
        self._dedup_ttl_ms = dedup_ttl_ms
        self._trace_ttl_ms = trace_ttl_ms
        self._decision_log_max = decision_log_max
        self._peers: TTLCache[str, PeerState] = TTLCache(cache_size, cache_ttl_ms)
        self._recipients: TTLCache[str, RecipientProfile | None] = TTLCache(
            cache_size, cache_ttl_ms
        )
        self._globals: TTLCache[str, Globals] = TTLCache(1, cache_ttl_ms)
        # Most sender/recipient pairs have no pact: cache that too (False), not only hits.
        self._pacts: TTLCache[tuple[str, str], PactTerms | bool] = TTLCache(
            cache_size, cache_ttl_ms
        )
        # The per-message commands (claim, peer reads, finish, decision records) of
        # concurrent decisions share pipelines: one round trip per batch, not per command.
        self._auto = AutoPipeline(self._redis)
        self._claim = self._redis.register_script(_CLAIM)
        self._hand_over = self._redis.register_script(_HAND_OVER)
        self._finish = self._redis.register_script(_FINISH)
        self._add_decayed = self._redis.register_script(_ADD_DECAYED)
        self._reserve = self._redis.register_script(_RESERVE)
        self._spent = self._redis.register_script(_SPENT)
        self._issue_challenge = self._redis.register_script(_ISSUE_CHALLENGE)
        self._take_challenge = self._redis.register_script(_TAKE_CHALLENGE)
        self._rotate = self._redis.register_script(_ROTATE)
        self._claim_report = self._redis.register_script(_CLAIM_REPORT)
        self._save_policy = self._redis.register_script(_SAVE_POLICY)
        self._add_capped = self._redis.register_script(_ADD_CAPPED)
        self._supersede = self._redis.register_script(_SUPERSEDE)
        self._slash = self._redis.register_script(_SLASH)
        self._corroborate = self._redis.register_script(_CORROBORATE)
        self.serious = SeriousQueue(self._redis, keys, self._call)
        self.federation = FederationStore(self._redis, keys, self._call)

    async def close(self) -> None:
        """Close the connection pool (and the Sentinel clients, if any)."""
        await self._redis.aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()

    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc

    async def _together(self, *commands: Command) -> list[Any]:
        """Several commands in the next shared pipeline; their replies in order."""
        return await self._call(self._auto.run_all(commands))

    async def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    @property
    def cache_stats(self) -> tuple[int, int]:
        """(hits, misses) of the peer cache."""
        return self._peers.hits, self._peers.misses

    # -- message lifecycle -------------------------------------------------------------

    async def claim(self, env: Envelope, digest: str, redelivered: bool) -> Claim:
        """Claim a message id and nonce atomically (dedup after crashes, replay defence)."""
        claimed = await self.claim_at(env, digest, redelivered, int(time.time() * 1000))
        return claimed.claim

    async def claim_at(
        self, env: Envelope, digest: str, redelivered: bool, now_ms: int, holder: str = ""
    ) -> Claimed:
        """The claim for `holder` (a router session); for a retry also the time the
        message was first claimed and the session holding it (if known)."""
        keys = [self.keys.seen(env.id), self.keys.nonce(env.sender, env.nonce)]
        args: list[str | int] = [
            digest, self._dedup_ttl_ms, "1" if redelivered else "0", now_ms, holder,
        ]  # fmt: skip
        raw = await self._replicated_eval(Command.eval(self._claim, keys, args))
        state, _, rest = _text(raw).partition("|")
        first, _, previous = rest.partition("|")
        return Claimed(Claim(state), int(first) if first else None, previous)

    async def hand_over(self, env: Envelope, digest: str, expected: str, holder: str) -> str:
        """Move a pending claim from `expected` to `holder` ('' releases it). Returns 'ok',
        'done', 'gone', 'replay' or 'held|<holder>' when another session holds it now."""
        args = [digest, expected, holder]
        command = Command.eval(self._hand_over, [self.keys.seen(env.id)], args)
        return _text(await self._replicated_eval(command))

    async def _replicated_eval(self, command: Command) -> Any:
        if self._replicated:
            # Replication is asynchronous: a claim the master acknowledged but had not yet
            # passed on would vanish in a failover, and an identical copy could then be
            # routed a second time. WAIT (in the same pipeline) holds the reply until the
            # replica has it too, or 100 ms passed (a replica that is down slows, never stops).
            raw, _ = await self._together(command, Command.plain("WAIT", 1, 100))
            return raw
        return await self._call(self._auto.run(command))

    async def finish(
        self, env: Envelope, digest: str, result: Finish, policy: Policy, now_ms: int
    ) -> str:
        """Record a committed outcome and the sender's behaviour; returns the anomaly that
        put the sender under observation, or ''."""
        keys = [
            self.keys.seen(env.id),
            self.keys.peer(env.sender),
            self.keys.delivered(env.id),
            self.keys.known_recipients(env.sender),
            self.keys.decisions,
            self.keys.trace(result.trace_id),
            self.keys.trace_of(env.id),
        ]
        behavior = policy.behavior
        domain = domain_of(env)
        delivered = f"{env.sender}|{env.recipient}|{now_ms}|{domain}" if result.delivered else ""
        args: list[bytes | str | int | float] = [
            digest, result.outcome, int(result.clean), delivered, policy.reports.window_ms,
            now_ms, result.size, env.recipient, int(result.gate_failed),
            int(result.outside_manifest), behavior.rate_floor_per_minute,
            behavior.rate_spike_factor, behavior.baseline_minutes,
            behavior.new_recipients_per_hour, behavior.size_factor, behavior.size_floor_bytes,
            behavior.size_baseline_messages, behavior.gate_failure_limit,
            behavior.outside_manifest_limit, behavior.window_ms,
            result.entry, result.trace, self._trace_ttl_ms, self._decision_log_max,
            result.trace_id,
        ]  # fmt: skip
        raw = await self._call(self._auto.run(Command.eval(self._finish, keys, args)))
        anomaly = _text(raw or b"")
        # An anomaly reaches every router at once (invalidation). Otherwise only the clean
        # streak moved: bump our cached copy as Redis did rather than read the peer again
        # on its next message; other routers catch up when their entry expires.
        if anomaly:
            await self.invalidate(f"peer:{env.sender}")
        elif result.clean:
            self._peers.update(env.sender, _one_more_clean)
        return anomaly

    async def record_decision(
        self, entry: bytes, trace: bytes, trace_id: str, message_id: str | None
    ) -> None:
        """Decision log and flight recorder for a decision that had no finish step
        (undecodable, forged or replayed messages)."""
        await self._together(
            Command.plain(
                "XADD", self.keys.decisions, "MAXLEN", "~", self._decision_log_max, "*",
                "e", entry,
            ),
            Command.plain("SET", self.keys.trace(trace_id), trace, "PX", self._trace_ttl_ms),
        )  # fmt: skip

    async def recent_decisions(
        self, *, limit: int = 1000, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """Decision log entries, oldest first: the last `limit`, or a time range."""
        start = "-" if since_ms is None else str(since_ms)
        end = "+" if until_ms is None else str(until_ms)
        rows: Any = await self._call(
            self._redis.xrevrange(self.keys.decisions, end, start, count=limit)
        )
        return [orjson.loads(fields[b"e"]) for _, fields in reversed(rows or [])]

    async def trace(self, trace_id: str) -> dict[str, Any] | None:
        """A decision's flight-recorder entry with its later events, or None."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.trace(trace_id))
            pipe.lrange(self.keys.trace_events(trace_id), 0, -1)
            raw, events = await self._call(pipe.execute())
        if raw is None:
            return None
        record: dict[str, Any] = orjson.loads(raw)
        record["events"] = [orjson.loads(event) for event in events]
        return record

    async def trace_id_of(self, message_id: str) -> str | None:
        """The trace id of the decision on `message_id`, if it is still recorded."""
        raw = await self._call(self._redis.get(self.keys.trace_of(message_id)))
        return None if raw is None else _text(raw)

    async def add_trace_event(self, trace_id: str, event: dict[str, Any]) -> None:
        """Append a later event (report, release, approval) to a decision's trace."""
        key = self.keys.trace_events(trace_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, orjson.dumps(event))
            pipe.pexpire(key, self._trace_ttl_ms)
            await self._call(pipe.execute())

    async def outcome(self, message_id: str) -> str | None:
        """The recorded '<digest>|<state>[|outcome]' for a message id, if any."""
        raw = await self._call(self._redis.get(self.keys.seen(message_id)))
        if raw is None:
            return None
        return raw if isinstance(raw, str) else raw.decode()

    async def context(
        self, env: Envelope, now_ms: int, *, replayed: bool, cached: bool = True
    ) -> TrustContext:
        """Everything a decision reads about this message, cached where safe."""
        peer = await self.peer(env.sender, now_ms, cached=cached)
        if env.payment is not None:
            peer = replace(peer, spent_24h_ref=await self.spent(env.sender, now_ms))
        recipient = await self.recipient(env.recipient, now_ms)
        shared = await self.globals(now_ms)
        pact = await self.pact(env.sender, env.recipient, now_ms)
        return TrustContext(
            peer=peer,
            recipient=recipient,
            issuers=shared.issuers,
            revoked_evidence=shared.revoked_evidence,
            pact=pact,
            replayed=replayed,
        )

    async def peer(self, did: str, now_ms: int, *, cached: bool = True) -> PeerState:
        """A sender's state (cached for cache_ttl_ms, dropped on invalidation); admin
        reads pass cached=False to see writes other processes just made."""
        hit = self._peers.get(did, now_ms) if cached else None
        if hit is not None:
            return hit
        fields, vouch_fields = await self._together(
            Command.plain("HGETALL", self.keys.peer(did)),
            Command.plain("HGETALL", self.keys.vouches(did)),
        )
        state = codec.peer_from_hash(did, _as_bytes(fields))
        if vouch_fields:
            state = replace(state, vouches=await self._vouch_facts(_as_bytes(vouch_fields)))
        self._peers.put(did, state, now_ms)
        return state

    async def _vouch_facts(self, vouch_fields: dict[bytes, bytes]) -> tuple[Vouch, ...]:
        """Each vouch with its voucher's own standing (never the voucher's vouches)."""
        vouches = [_vouch(value) for value in vouch_fields.values()]
        async with self._redis.pipeline(transaction=False) as pipe:
            for vouch in vouches:
                pipe.hgetall(self.keys.peer(vouch.voucher))
            states = await self._call(pipe.execute())
        facts = []
        for vouch, fields in zip(vouches, states, strict=True):
            voucher = codec.peer_from_hash(vouch.voucher, _as_bytes(fields))
            facts.append(
                replace(
                    vouch,
                    voucher_successes=voucher.successes,
                    voucher_failures=voucher.failures,
                    voucher_credential=voucher.credential,
                    voucher_revoked=voucher.revoked,
                )
            )
        return tuple(facts)

    async def recipient(self, did: str, now_ms: int) -> RecipientProfile | None:
        """A recipient's profile, or None when unknown."""
        cached = self._recipients.get(did, now_ms)
        if cached is not None:
            return cached
        fields = await self._call(self._redis.hgetall(self.keys.recipient(did)))
        profile = codec.recipient_from_hash(did, _as_bytes(fields))
        if profile is not None:
            # Unknown recipients are not cached: registering one must take effect at once.
            self._recipients.put(did, profile, now_ms)
        return profile

    async def globals(self, now_ms: int) -> Globals:
        """The issuer trust list and revoked evidence ids."""
        cached = self._globals.get("globals", now_ms)
        if cached is not None:
            return cached
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.issuers)
            pipe.smembers(self.keys.revoked_evidence)
            pipe.hgetall(self.keys.issuer_trust)
            issuers, revoked, trust = await self._call(pipe.execute())
        roles = {
            did.decode(): frozenset(orjson.loads(value))
            for did, value in _as_bytes(issuers).items()
        }
        weights = {did.decode(): float(value) for did, value in _as_bytes(trust).items()}
        shared = Globals(TrustList(roles, weights), frozenset(r.decode() for r in revoked))
        self._globals.put("globals", shared, now_ms)
        return shared

    async def pact(self, sender: str, recipient: str, now_ms: int = 0) -> PactTerms | None:
        """The stored pact from sender to recipient, if any (cached, invalidated on change)."""
        hit = self._pacts.get((sender, recipient), now_ms)
        if hit is not None:
            return hit if isinstance(hit, PactTerms) else None
        terms = await self._load_pact(sender, recipient)
        self._pacts.put((sender, recipient), terms or False, now_ms)
        return terms

    async def _load_pact(self, sender: str, recipient: str) -> PactTerms | None:
        raw = await self._call(self._redis.get(self.keys.pact(sender, recipient)))
        if raw is None:
            return None
        stored = orjson.loads(raw)
        data = stored["terms"]
        data["monitoring"] = stored.get("monitoring") or "metadata"
        data["kinds"] = frozenset(data["kinds"])
        data["data_classes"] = frozenset(data["data_classes"])
        return PactTerms(**data)

    async def pacts_from(self, sender: str) -> list[dict[str, Any]]:
        """Active pacts with `sender` as the sending party (terms and monitoring)."""
        pattern = self.keys.pact(sender, "*")
        pacts = []
        async for key in self._redis.scan_iter(match=pattern, count=200):
            raw = await self._call(self._redis.get(key))
            if raw is not None:
                stored = orjson.loads(raw)
                pacts.append({**stored["terms"], "monitoring": stored["monitoring"]})
        return pacts

    async def spent(self, did: str, now_ms: int) -> int:
        """What `did` paid over the last 24 h, every currency together, in reference minor
        units."""
        total = await self._call(self._spent(keys=[self.keys.spend(did)], args=[now_ms]))
        return int(total)

    async def reserve_spend(
        self, did: str, amount_ref_minor: int, cap_ref_minor: int, message_id: str, now_ms: int
    ) -> bool:
        """Atomically add a payment (reference minor units) to the rolling 24 h total
        unless it would pass the cap."""
        amount_minor, cap_minor = amount_ref_minor, cap_ref_minor
        key = self.keys.spend(did)
        result = await self._call(
            self._reserve(keys=[key], args=[now_ms, amount_minor, cap_minor, message_id])
        )
        return int(result) >= 0

    # -- handshake challenges -------------------------------------------------------------

    async def issue_challenge(
        self,
        challenge: str,
        agent: str,
        expires_ms: int,
        now_ms: int,
        max_pending: int,
        *,
        bucket: str = "-",
        per_bucket: int = 8,
    ) -> Issued:
        """Remember a challenge until it expires, holding at most `per_bucket` pending for
        one `bucket` (the validated login that asked; its oldest is dropped to make room)
        and `max_pending` in all (BUSY: nothing issued)."""
        keys = [
            self.keys.challenges,
            self.keys.challenge(challenge),
            self.keys.challenges_of(bucket),
        ]
        args: list[str | int] = [now_ms, expires_ms, agent, max_pending, max(1, per_bucket)]
        raw = await self._call(self._issue_challenge(keys=keys, args=args))
        return Issued(_text(raw))

    async def take_challenge(self, challenge: str) -> tuple[str, int] | None:
        """(agent, expires_ms) of a pending challenge, removing it; None if unknown/used."""
        keys = [self.keys.challenges, self.keys.challenge(challenge)]
        raw = await self._call(self._take_challenge(keys=keys, args=[]))
        if not raw:
            return None
        agent, _, expires = _text(raw).rpartition("|")
        return agent, int(expires)

    # -- evidence and state changes ------------------------------------------------------

    async def register_recipient(self, profile: RecipientProfile) -> None:
        """Register (or update) an agent that may receive messages."""
        key = self.keys.recipient(profile.did)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=dict[Any, Any](codec.recipient_to_hash(profile)))
            await self._call(pipe.execute())
        await self.invalidate(f"recipient:{profile.did}")

    async def add_lane(self, did: str) -> None:
        """Record that `did` has an ingress lane (after the admin declared it) and tell
        the routers, which start consuming it at once (and find it on their next poll
        if they missed the announcement)."""
        await self._call(self._redis.sadd(self.keys.lanes, did))
        await self.invalidate(f"lane:{did}")

    async def lanes(self) -> set[str]:
        """The DIDs whose ingress lanes the routers consume."""
        members = await self._call(self._redis.smembers(self.keys.lanes))
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    async def add_issuer(
        self,
        did: str,
        roles: frozenset[IssuerRole] | set[IssuerRole],
        *,
        trust: float | None = None,
    ) -> None:
        """Trust `did` for `roles` (added to any it already has); `trust` in [0, 1] is how
        far its federation records count."""
        if not roles:
            raise ValueError("an issuer is trusted for at least one role")
        if trust is not None and not 0.0 <= trust <= 1.0:
            raise ValueError("an issuer's trust weight is between 0 and 1")
        current = (await self.issuer_roles()).get(did, frozenset())
        merged = sorted(current | {IssuerRole(role).value for role in roles})
        await self._call(self._redis.hset(self.keys.issuers, did, orjson.dumps(merged)))
        if trust is not None:
            await self._call(self._redis.hset(self.keys.issuer_trust, did, str(trust)))
        await self.invalidate("globals")

    async def issuer_trust(self) -> dict[str, float]:
        """Trust weights of federation issuers, as they are in Redis now."""
        raw = await self._call(self._redis.hgetall(self.keys.issuer_trust))
        return {k.decode(): float(v) for k, v in _as_bytes(raw).items()}

    async def remove_issuer(
        self, did: str, roles: frozenset[IssuerRole] | set[IssuerRole] | None = None
    ) -> None:
        """Stop trusting `did` for `roles` (all of them by default); what it issued stops
        counting on every router's next decision."""
        left = set() if roles is None else set((await self.issuer_roles()).get(did, ()))
        left -= {IssuerRole(role).value for role in roles or ()}
        if left:
            await self._call(self._redis.hset(self.keys.issuers, did, orjson.dumps(sorted(left))))
        else:
            await self._call(self._redis.hdel(self.keys.issuers, did))
        if IssuerRole.FEDERATION.value not in left:
            await self._call(self._redis.hdel(self.keys.issuer_trust, did))
        await self.invalidate("globals")

    async def issuer_roles(self) -> dict[str, frozenset[str]]:
        """The trust list as it is in Redis now: issuer DID -> roles."""
        raw = await self._call(self._redis.hgetall(self.keys.issuers))
        return {k.decode(): frozenset(orjson.loads(v)) for k, v in _as_bytes(raw).items()}

    async def revoke_evidence(self, evidence_id: str) -> bool:
        """Revoke a recorded credential, attestation or bond by id; False (and nothing
        changed) for an id never recorded here."""
        if not await self._call(self._redis.hexists(self.keys.evidence_ids, evidence_id)):
            return False
        await self._call(self._redis.sadd(self.keys.revoked_evidence, evidence_id))
        await self.invalidate("globals")
        return True

    async def evidence_subject(self, evidence_id: str) -> str | None:
        """'<kind>|<subject>' of a recorded piece of evidence, or None."""
        raw = await self._call(self._redis.hget(self.keys.evidence_ids, evidence_id))
        return None if raw is None else _text(raw)

    async def revoke_key(self, did: str) -> None:
        """Revoke a sender's key: every router blocks it once the invalidation lands."""
        await self._set_peer(did, {codec.REVOKED: b"1"})

    async def record_possession(self, did: str, verified_ms: int, expires_ms: int) -> None:
        """Record a verified proof of key possession (from the handshake)."""
        await self._set_peer(
            did, {codec.POSSESSION_AT: str(verified_ms), codec.POSSESSION_UNTIL: str(expires_ms)}
        )

    async def set_credential(self, cred: Credential) -> str:
        """Record a credential verified by the caller unless a newer one is recorded:
        'ok', 'same' (this very one again) or 'superseded'."""
        value = codec.credential_field(cred)
        return await self._record_evidence(
            cred.subject, "credential", (cred.issued_at_ms, cred.credential_id), value
        )

    async def set_attestation(self, att: Attestation) -> str:
        """Record an attestation verified by the caller ('ok', 'same' or 'superseded')."""
        value = codec.attestation_field(att)
        return await self._record_evidence(
            att.subject, "attestation", (att.issued_at_ms, att.attestation_id), value
        )

    async def set_bond(self, did: str, bond: Bond) -> str:
        """Record a custodian's bond verified by the caller ('ok', 'same' or 'superseded');
        a new bond starts with nothing slashed, the same one again keeps its slashes."""
        return await self._record_evidence(
            did, "bond", (bond.issued_at_ms, bond.bond_id), codec.bond_field(bond),
            reset=codec.BOND_CUT,
        )  # fmt: skip

    async def _record_evidence(
        self, did: str, kind: str, issued: tuple[int, str], value: bytes, *, reset: str = ""
    ) -> str:
        field = {"credential": codec.CREDENTIAL, "attestation": codec.ATTESTATION,
                 "bond": codec.BOND, "manifest": codec.MANIFEST}[kind]  # fmt: skip
        peer = self.keys.peer(did)
        outcome = await self._supersede_into(peer, peer, codec.watermark_field(kind), issued,
                                             field=field, value=value, reset=reset)  # fmt: skip
        if outcome == "ok" and kind != "manifest":
            entry = f"{kind}|{did}".encode()
            await self._call(self._redis.hset(self.keys.evidence_ids, issued[1], entry))
        if outcome == "ok":
            await self.invalidate(f"peer:{did}")
        return outcome

    async def _supersede_into(
        self,
        watermark_key: str,
        target_key: str,
        watermark: str,
        issued: tuple[int, str],
        *,
        value: bytes,
        field: str = "",
        expires_ms: int = 0,
        reset: str = "",
    ) -> str:
        mode = "hash" if field else "string"
        args: list[bytes | str | int] = [
            watermark,
            issued[0],
            issued[1],
            mode,
            field,
            value,
            expires_ms,
            reset,
        ]
        raw = await self._call(self._supersede(keys=[watermark_key, target_key], args=args))
        return _text(raw)

    async def set_imported_record(self, did: str, record: ImportedRecord) -> str:
        """Record another broker's verified trust record about `did` ('ok', 'same' or
        'superseded': one record per issuer, the newest wins)."""
        field = codec.IMPORTED + record.issuer
        peer = self.keys.peer(did)
        issued = (record.valid_from_ms, record.credential_id)
        value = orjson.dumps(asdict(record))
        outcome = await self._supersede_into(
            peer, peer, codec.watermark_field(field), issued, field=field, value=value
        )
        if outcome == "ok":
            entry = f"federation|{did}".encode()
            await self._call(self._redis.hset(self.keys.evidence_ids, record.credential_id, entry))
            await self.invalidate(f"peer:{did}")
        return outcome

    async def set_expected_code(self, did: str, codebase_hash: str) -> None:
        """The codebase hash ops expect `did` to run; an attestation of another mismatches."""
        await self._set_peer(did, {codec.EXPECTED_CODE: codebase_hash})

    async def set_manifest(self, did: str, manifest: Manifest) -> str:
        """Record a verified capability manifest ('ok', 'same' or 'superseded')."""
        value = codec.manifest_field(manifest)
        return await self._record_evidence(
            did, "manifest", (manifest.issued_at_ms, manifest.manifest_id), value
        )

    async def set_pact(
        self, pact: PactTerms, document: dict[str, Any], *, issued_at_ms: int
    ) -> str:
        """Record a pact both parties signed (verified by the caller), with its document,
        unless a newer pact between them is recorded ('ok', 'same' or 'superseded')."""
        data = {
            "pact_id": pact.pact_id,
            "sender": pact.sender,
            "recipient": pact.recipient,
            "kinds": sorted(pact.kinds),
            "data_classes": sorted(pact.data_classes),
            "max_payment_minor": pact.max_payment_minor,
            "currency": pact.currency,
            "expires_at_ms": pact.expires_at_ms,
        }
        key = self.keys.pact(pact.sender, pact.recipient)
        stored = {"terms": data, "monitoring": document.get("monitoring"), "document": document}
        # The key expires with the pact, so an expired pact cannot linger in Redis.
        outcome = await self._supersede_into(
            self.keys.peer(pact.sender), key, codec.watermark_field(f"pact:{pact.recipient}"),
            (issued_at_ms, pact.pact_id), value=orjson.dumps(stored),
            expires_ms=pact.expires_at_ms,
        )  # fmt: skip
        if outcome == "ok":
            await self.invalidate(f"pact:{pact.sender}|{pact.recipient}")
        return outcome

    async def record_declared_trust(self, did: str, level: str) -> None:
        """Keep a self-declared trust level for the record; scoring never reads it."""
        await self._set_peer(did, {"declared_trust": level[:64]})

    async def rotate_key(self, old: str, new: str) -> str:
        """Move history from `old` to `new` and revoke `old`, atomically.

        Returns 'ok', 'old_revoked' or 'new_in_use'.
        """
        keys = [self.keys.peer(old), self.keys.peer(new)]
        result = await self._call(self._rotate(keys=keys, args=[old, new]))
        outcome = result.decode() if isinstance(result, bytes) else str(result)
        if outcome == "ok":
            await self.invalidate(f"peer:{old}")
            await self.invalidate(f"peer:{new}")
        return outcome

    async def add_outcome(
        self, did: str, *, success: bool, weight: float, now_ms: int, policy: Policy
    ) -> float:
        """Fold a verified outcome into the decayed success or failure count."""
        model = policy.reputation
        fields, half_life = (
            ((codec.SUCCESS_VALUE, codec.SUCCESS_AT), model.success_half_life_ms)
            if success
            else ((codec.FAILURE_VALUE, codec.FAILURE_AT), model.failure_half_life_ms)
        )
        value = await self._call(
            self._add_decayed(keys=[self.keys.peer(did)], args=[*fields, weight, now_ms, half_life])
        )
        await self.invalidate(f"peer:{did}")
        return float(value)

    async def add_failure(
        self, did: str, units: float, *, domain: str, now_ms: int, policy: Policy
    ) -> None:
        """Fold verified failure units into `did`'s failures and, for a known message kind,
        its failures in that domain (no per-counterparty cap: the failure is verified)."""
        await self.add_outcome(did, success=False, weight=units, now_ms=now_ms, policy=policy)
        if domain in MESSAGE_KINDS:
            fields = codec.domain_failure_fields(domain)
            half_life = policy.reputation.failure_half_life_ms
            args: list[str | int | float] = [*fields, units, now_ms, half_life]
            await self._call(self._add_decayed(keys=[self.keys.peer(did)], args=args))
            await self.invalidate(f"peer:{did}")

    # -- outcome reports, vouches, slashing -------------------------------------------------

    async def claim_report(
        self, reporter: str, subject: str, message_id: str, policy: Policy
    ) -> str:
        """'ok|<kind of the reported message>' once for the recipient of a delivered
        message, else the refusal code."""
        keys = [self.keys.delivered(message_id), self.keys.reported(message_id)]
        args: list[str | int] = [reporter, subject, policy.reports.window_ms]
        raw = await self._call(self._claim_report(keys=keys, args=args))
        return _text(raw)

    async def apply_report(
        self,
        subject: str,
        reporter: str,
        report: Report,
        weight: float,
        policy: Policy,
        now_ms: int,
        *,
        domain: str = "",
        reporter_org: str,
        subject_org: str | None,
    ) -> ReportEffect:
        """Fold a verified report into the subject's reputation (and its vouchers'),
        capped per counterparty organisation; `domain` is the kind of the reported
        message. A high or critical report acts beyond its capped units only when
        corroborated by independent organisations; otherwise it waits for a reviewer."""
        if weight <= 0:
            return ReportEffect(0.0)
        if report.success:
            if reporter_org == subject_org:
                return ReportEffect(0.0)  # an organisation's praise of its own agents
            added = await self._capped_add(
                subject, self.keys.report_pairs(subject), reporter_org, weight, now_ms,
                policy.reputation.success_half_life_ms, policy.reports.pair_success_cap,
                codec.SUCCESS_VALUE, codec.SUCCESS_AT,
            )  # fmt: skip
            return ReportEffect(added)
        fields: list[str] = [codec.FAILURE_VALUE, codec.FAILURE_AT]
        if domain in MESSAGE_KINDS:
            # Failures also count against the peer in the domain they happened in.
            fields += codec.domain_failure_fields(domain)
        added = await self._capped_add(
            subject, self.keys.report_blame(subject), reporter_org,
            failure_units(report, policy) * weight, now_ms, policy.reputation.failure_half_life_ms,
            policy.reports.pair_failure_cap, *fields,
        )  # fmt: skip
        await self._bill_vouchers(subject, added, policy, now_ms)
        if report.severity not in ("high", "critical"):
            return ReportEffect(added)
        outcome = await self._call(
            self._corroborate(
                keys=[self.keys.serious_orgs(subject)],
                args=[
                    reporter_org,
                    now_ms,
                    policy.reports.corroboration_window_ms,
                    policy.reports.corroboration,
                ],
            )
        )
        return ReportEffect(added, outcome.decode() if isinstance(outcome, bytes) else outcome)

    async def _capped_add(
        self, subject: str, pairs: str, org: str, amount: float, now_ms: int, half_life: int,
        cap: float, *fields: str,
    ) -> float:  # fmt: skip
        args: list[str | int | float] = [org, amount, now_ms, half_life, cap, *fields]
        added = float(await self._call(self._add_capped(keys=[self.keys.peer(subject), pairs],
                                                         args=args)))  # fmt: skip
        if added > 0:
            await self.invalidate(f"peer:{subject}")
        return added

    async def _bill_vouchers(self, subject: str, units: float, policy: Policy, now_ms: int) -> None:
        """Vouching is not free: each voucher answers for a share of the damage."""
        for vouch in await self._raw_vouches(subject):
            cost = units * min(vouch.share, policy.vouching.max_share) * policy.vouching.liability
            if cost > 0 and vouch.expires_at_ms > now_ms:
                await self.add_outcome(
                    vouch.voucher, success=False, weight=cost, now_ms=now_ms, policy=policy
                )

    async def add_vouch(self, vouchee: str, vouch: Vouch, *, issued: tuple[int, str]) -> str:
        """Record `vouch` for `vouchee` (signature verified by the caller) unless a newer
        vouch from the same voucher is recorded ('ok', 'same' or 'superseded')."""
        data = {
            "voucher": vouch.voucher,
            "share": vouch.share,
            "expires_at_ms": vouch.expires_at_ms,
        }
        outcome = await self._supersede_into(
            self.keys.peer(vouchee), self.keys.vouches(vouchee),
            codec.watermark_field(f"vouch:{vouch.voucher}"), issued,
            field=vouch.voucher, value=orjson.dumps(data),
        )  # fmt: skip
        if outcome == "ok":
            await self.invalidate(f"peer:{vouchee}")
        return outcome

    async def _raw_vouches(self, vouchee: str) -> list[Vouch]:
        raw = await self._call(self._redis.hgetall(self.keys.vouches(vouchee)))
        return [_vouch(value) for value in _as_bytes(raw).values()]

    async def slash_bond(self, did: str, *, amount_minor: int = 0, fraction: float = 0.0) -> int:
        """Reduce the held bond by an amount plus a fraction of what is held (never below
        0), atomically; returns what is left."""
        left = await self._call(
            self._slash(keys=[self.keys.peer(did)], args=[amount_minor, fraction])
        )
        await self.invalidate(f"peer:{did}")
        return int(left)

    async def mark_presentation(self, presentation_id: str, ttl_ms: int) -> bool:
        """True the first time a presentation id is used within `ttl_ms`, False after."""
        key = self.keys.presentation(presentation_id)
        return bool(await self._call(self._redis.set(key, b"1", nx=True, px=ttl_ms)))

    async def mark_once(self, name: str) -> bool:
        """True the first time `name` is marked (kept 400 days), False ever after."""
        key = f"{self.keys.prefix}once:{name}"
        return bool(await self._call(self._redis.set(key, b"1", nx=True, px=400 * 86_400_000)))

    async def set_clean_streak(self, did: str, count: int) -> None:
        """Set the number of clean messages since the sender's last anomaly."""
        await self._set_peer(did, {codec.CLEAN: str(count)})

    async def purge(self) -> int:
        """Delete every key under this store's prefix (demo resets and tests only)."""
        deleted, batch = 0, []
        async for key in self._redis.scan_iter(match=self.keys.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(await self._call(self._redis.unlink(*batch)))
                batch = []
        if batch:
            deleted += int(await self._call(self._redis.unlink(*batch)))
        await self.invalidate("all")
        return deleted

    async def hold_payments(self, did: str, until_ms: int) -> None:
        """Escalate `did`'s payments instead of delivering them until `until_ms`."""
        await self._set_peer(did, {codec.PAYMENT_HOLD: str(until_ms)})

    async def release_payments(self, did: str) -> None:
        """Lift a payment hold."""
        await self._call(self._redis.hdel(self.keys.peer(did), codec.PAYMENT_HOLD))
        await self.invalidate(f"peer:{did}")

    async def record_anomaly(self, did: str, now_ms: int, reason: str = "") -> None:
        """Put a sender under observation: its clean streak restarts from zero."""
        fields = {codec.ANOMALY: str(now_ms), codec.CLEAN: "0"}
        if reason:
            fields["anomaly_reason"] = reason
        await self._set_peer(did, dict[str, str | bytes](fields))

    async def _set_peer(self, did: str, fields: dict[str, str | bytes]) -> None:
        await self._call(self._redis.hset(self.keys.peer(did), mapping=dict[Any, Any](fields)))
        await self.invalidate(f"peer:{did}")

    # -- policy -------------------------------------------------------------------------

    async def load_policy(self) -> Policy:
        """The stored policy, or the default one when none was ever stored."""
        raw = await self._call(self._redis.get(self.keys.policy))
        return Policy() if raw is None else load_policy(orjson.loads(raw))

    async def save_policy(self, policy: Policy, *, who: str = "system", why: str = "") -> Policy:
        """Put a validated policy in force as the next version; record who, when, why.

        The version is assigned here, atomically, so two operators saving at once get
        two versions rather than one lost update.
        """
        now = int(time.time() * 1000)
        content = policy.model_dump(mode="json", exclude={"version"})
        keys = [self.keys.policy, self.keys.policy_history]
        args: list[bytes | str | int] = [orjson.dumps(content), who, why, now]
        version = int(await self._call(self._save_policy(keys=keys, args=args)))
        await self.invalidate("policy")
        return policy.model_copy(update={"version": version})

    async def policy_history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recorded policy versions, newest first: version, who, at_ms, why, policy."""
        raw = await self._call(self._redis.lrange(self.keys.policy_history, 0, limit - 1))
        return [orjson.loads(item) for item in raw]

    async def policy_version(self, version: int) -> Policy:
        """An earlier policy version, as it was recorded."""
        for entry in await self.policy_history(limit=10_000):
            if entry["version"] == version:
                return load_policy({**entry["policy"], "version": version})
        if version == 1:
            return Policy()  # the built-in default
        raise PolicyError(f"no policy version {version} in the history")

    # -- invalidation -------------------------------------------------------------------

    async def invalidate(self, what: str) -> None:
        """Drop `what` here and publish it so every router drops it within a second."""
        self._drop(what)
        await self._call(self._redis.publish(self.keys.invalidate, what))

    def _drop(self, what: str) -> None:
        kind, _, did = what.partition(":")
        if kind == "peer":
            self._peers.discard(did)
        elif kind == "recipient":
            self._recipients.discard(did)
        elif kind == "globals":
            self._globals.clear()
        elif kind == "pact":
            sender, _, recipient = did.partition("|")
            self._pacts.discard((sender, recipient))
        elif kind == "all":
            self._pacts.clear()
            self._peers.clear()
            self._recipients.clear()
            self._globals.clear()

    async def invalidations(self) -> AsyncIterator[str]:
        """Apply invalidations from other routers as they arrive; yields each one."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await self._call(pubsub.subscribe(self.keys.invalidate))
            # Entries cached before the subscription may have missed an invalidation.
            self._drop("all")
            yield "all"
            while True:
                message = await self._call(pubsub.get_message(timeout=1.0))
                if message is None:
                    continue
                what = bytes(message["data"]).decode()
                self._drop(what)
                yield what
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    # -- review records (broker/workflow.py) ------------------------------------------------

    async def claim_review(
        self,
        trace_id: str,
        record: dict[str, Any],
        *,
        take_over_pending: bool,
        replaces: str = "",
    ) -> dict[str, Any] | None:
        """Record the one final review decision on a trace: None when this call claimed it,
        else the decision already recorded. `take_over_pending` lets a claim left 'pending'
        by an interrupted reviewer be replaced (only safe while holding the message);
        `replaces` names an action a new decision may supersede (e.g. 'expire')."""
        script = self._redis.register_script(_CLAIM_REVIEW)
        payload = orjson.dumps(record).decode()
        args: list[str | int] = [payload, int(take_over_pending), _REVIEW_MS, replaces]
        current = await self._call(script(keys=[self.keys.review(trace_id)], args=args))
        return None if current is None else dict(orjson.loads(current))

    async def finish_review(self, trace_id: str, record: dict[str, Any]) -> None:
        """Overwrite a claimed review with its final state (the action was committed)."""
        key = self.keys.review(trace_id)
        await self._call(self._redis.set(key, orjson.dumps(record), px=_REVIEW_MS))

    async def abandon_review(self, trace_id: str, token: str) -> None:
        """Drop a claim whose action never happened, unless another claim replaced it."""
        script = self._redis.register_script(_ABANDON_REVIEW)
        await self._call(script(keys=[self.keys.review(trace_id)], args=[token]))

    async def review(self, trace_id: str) -> dict[str, Any] | None:
        """The final review decision recorded on a trace, if any."""
        raw = await self._call(self._redis.get(self.keys.review(trace_id)))
        return None if raw is None else dict(orjson.loads(raw))

    async def log_review(self, trace_id: str, entry: dict[str, Any]) -> None:
        """Append one entry to a trace's review log (the newest 100 are kept)."""
        key = self.keys.review_log(trace_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, orjson.dumps(entry))
            pipe.ltrim(key, -100, -1)
            pipe.pexpire(key, _REVIEW_MS)
            await self._call(pipe.execute())

    async def review_log(self, trace_id: str) -> list[dict[str, Any]]:
        """Every logged review action on a trace, oldest first."""
        raw = await self._call(self._redis.lrange(self.keys.review_log(trace_id), 0, -1))
        return [dict(orjson.loads(item)) for item in raw]

    async def await_evidence(self, trace_id: str, request: dict[str, Any]) -> None:
        """Mark an escalation as waiting for evidence from its sender."""
        key = self.keys.awaiting_evidence
        await self._call(self._redis.hset(key, trace_id, orjson.dumps(request)))

    async def awaiting_evidence(self) -> dict[str, dict[str, Any]]:
        """Escalations waiting for evidence: trace id -> the request."""
        raw = await self._call(self._redis.hgetall(self.keys.awaiting_evidence))
        return {k.decode(): dict(orjson.loads(v)) for k, v in _as_bytes(raw).items()}

    async def stop_awaiting_evidence(self, *trace_ids: str) -> None:
        """The escalations were decided: stop re-scoring them."""
        if trace_ids:
            await self._call(self._redis.hdel(self.keys.awaiting_evidence, *trace_ids))

    async def recipient_dids(self, limit: int = 10_000) -> list[str]:
        """DIDs of registered recipients (provisioned agents), up to `limit`."""
        prefix = self.keys.recipient("")

        async def scan() -> list[str]:
            found: list[str] = []
            async for key in self._redis.scan_iter(match=prefix + "*", count=500):
                found.append(key.decode()[len(prefix) :])
                if len(found) >= limit:
                    break
            return found

        return await self._call(scan())

    async def blocked_offset(self, trace_id: str) -> int | None:
        """Where on the blocked stream a reader last found the record of `trace_id`."""
        raw = await self._call(self._redis.get(self.keys.blocked_offset(trace_id)))
        return None if raw is None else int(raw)

    async def remember_blocked_offset(self, trace_id: str, offset: int) -> None:
        """Remember where the record of `trace_id` is on the blocked stream (a hint: the
        reader checks the record it finds there)."""
        key = self.keys.blocked_offset(trace_id)
        await self._call(self._redis.set(key, str(offset), px=_REVIEW_MS))

    async def try_lock(self, name: str, ttl_ms: int) -> bool:
        """True for the one caller that takes `name` until it expires after `ttl_ms`."""
        key = self.keys.lock(name)
        return bool(await self._call(self._redis.set(key, b"1", nx=True, px=ttl_ms)))


# Every wait on Redis has a deadline: a connection, a reply, a free pooled connection.
_POOL = {"max_connections": 64, "timeout": 5, "socket_timeout": 2.0,
         "socket_connect_timeout": 2.0, "retry_on_timeout": False}  # fmt: skip


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (it asks the Sentinels where the master is, and again after a
    failover) that waits for a free connection like the plain blocking pool below."""


def connect_redis(url: str) -> tuple[aioredis.Redis, list[aioredis.Redis]]:
    """A client (and the Sentinel clients it asks, to close with it) for
    redis://[:password@]host:port/db, or for the master a Sentinel group watches:
    redis+sentinel://[:password@]host:port[,host:port...]/service[/db]. The password
    authenticates to the Sentinels and to the master alike."""
    if not url.startswith("redis+sentinel://"):
        # A blocking pool: with `prefetch` decisions in flight, a plain pool runs out of
        # connections and raises, which would read as "Redis down" and pause the router.
        # Here a caller waits for a free connection instead (bench/ found ~100 false
        # pauses per 5,000 messages before this).
        pool = aioredis.BlockingConnectionPool.from_url(url, **_POOL)
        return aioredis.Redis.from_pool(pool), []  # owns the pool: aclose() closes it
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    password = unquote(parts.password) if parts.password else None
    service, _, db = parts.path.strip("/").partition("/")
    if not service:
        raise ConfigError(f"{url.split('@')[-1]}: name the Sentinel service, e.g. /trustbroker/0")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        sentinels.append((name or "127.0.0.1", int(port or 26379)))
    timeouts = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels, sentinel_kwargs={"password": password, **timeouts}, password=password,
        db=int(db or 0), **timeouts,
    )  # fmt: skip
    pool_options = {k: v for k, v in _POOL.items() if k in ("max_connections", "timeout")}
    master: aioredis.Redis = sentinel.master_for(
        service, redis_class=aioredis.Redis, connection_pool_class=_BlockingSentinelPool,
        retry_on_timeout=False, **pool_options,
    )  # fmt: skip
    return master, list(sentinel.sentinels)


def _as_bytes(fields: dict[Any, Any]) -> dict[bytes, bytes]:
    # The client is created without decode_responses, so keys and values are bytes.
    return fields


def _one_more_clean(peer: PeerState) -> PeerState:
    return replace(peer, clean_streak=peer.clean_streak + 1)


def _vouch(raw: bytes) -> Vouch:
    data = orjson.loads(raw)
    return Vouch(data["voucher"], data["share"], data["expires_at_ms"])


async def wait_until_available(store: RedisStore, retry_ms: int, stop: asyncio.Event) -> bool:
    """Poll until Redis answers (True) or `stop` is set (False)."""
    while not stop.is_set():
        if await store.ping():
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_ms / 1000)
    return False


# -- review records (used by the methods at the end of RedisStore) ---------------------------

# Review records are the audit trail of human decisions: kept 400 days.
_REVIEW_MS = 400 * DAY_MS

# KEYS: review. ARGV: record JSON, take over a pending claim ('1'/'0'), ttl ms, an action
# the new decision may supersede once done ('' for none).
# Returns false when claimed, else the record already there.
_CLAIM_REVIEW = """
local current = redis.call('GET', KEYS[1])
if current then
  local earlier = cjson.decode(current)
  local stale = ARGV[2] == '1' and earlier['state'] == 'pending'
  local superseded = ARGV[4] ~= '' and earlier['action'] == ARGV[4] and earlier['state'] == 'done'
  if not (stale or superseded) then return current end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return false
"""

# KEYS: review. ARGV: token of the claim to drop.
_ABANDON_REVIEW = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['token'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""
