"""The review queue of serious reports: high or critical reports that no independent
organisation has corroborated yet, waiting for a security reviewer (store side).

One report cannot put a peer under observation or slash its bond by itself: a slanderer
could. Each such report becomes an item here; a reviewer confirms it (the penalty then
applies) or dismisses it (`broker/report_review.py`). Items per reporter are bounded, so
a slanderer cannot flood the queue.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis

from broker.store.keys import Keys
from broker.store.part import Call, StorePart

T = TypeVar("T")

# KEYS: items hash, open zset, per-reporter counts, per-pair open item.
# ARGV: id, JSON, now, reporter, max, pair ('organisation|subject').
# Returns 1 filed, 2 folded into the pair's open item (its `repeats` + 1), 0 over the bound.
_OPEN = """
local existing = redis.call('HGET', KEYS[4], ARGV[6])
if existing and redis.call('ZSCORE', KEYS[2], existing) then
  local item = cjson.decode(redis.call('HGET', KEYS[1], existing))
  item['repeats'] = (tonumber(item['repeats']) or 0) + 1
  redis.call('HSET', KEYS[1], existing, cjson.encode(item))
  return 2
end
local open = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0')
if open >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
redis.call('HSET', KEYS[4], ARGV[6], ARGV[1])
return 1
"""

# Close an open item, once. KEYS: items hash, open zset, per-reporter counts, per-pair.
# ARGV: id, closed JSON, reporter, pair. Returns 1 when this call closed it.
_CLOSE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[3]) end
if redis.call('HGET', KEYS[4], ARGV[4]) == ARGV[1] then redis.call('HDEL', KEYS[4], ARGV[4]) end
return 1
"""


def _pair(item: dict[str, Any]) -> str:
    """The (reporter organisation, subject) an item belongs to; a reporter without an
    organisation is its own."""
    return f"{item.get('reporter_org') or item['reporter']}|{item['subject']}"


class SeriousQueue(StorePart):
    """Open and closed serious-report items in Redis (the caller maps Redis errors)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, call: Call) -> None:
        super().__init__(client, keys, call)
        self._open = client.register_script(_OPEN)
        self._close = client.register_script(_CLOSE)

    def _three(self) -> list[str]:
        keys = self._keys
        return [
            keys.serious_reports, keys.serious_open, keys.serious_by_reporter, keys.serious_by_pair
        ]  # fmt: skip

    async def open(self, item: dict[str, Any], max_per_reporter: int) -> str:
        """File `item` (with `id`, `reporter`, `reporter_org`, `subject`, `at_ms`):
        "filed"; "folded" when the same organisation already has an open item about the
        same subject (one review per pair, however often a slanderer repeats itself; the
        item's `repeats` counts the rest); "full" when its reporter already has
        `max_per_reporter` items open."""
        args = [item["id"], orjson.dumps(item), item["at_ms"], item["reporter"], max_per_reporter,
                _pair(item)]  # fmt: skip
        done = int(await self._call(self._open(keys=self._three(), args=args)))
        return {0: "full", 1: "filed", 2: "folded"}[done]

    async def close(self, item: dict[str, Any]) -> bool:
        """Record `item` in its final state; False when it was not open (closed already)."""
        args = [item["id"], orjson.dumps(item), item["reporter"], _pair(item)]
        return bool(await self._call(self._close(keys=self._three(), args=args)))

    async def get(self, item_id: str) -> dict[str, Any] | None:
        """One item, open or closed."""
        raw = await self._call(self._redis.hget(self._keys.serious_reports, item_id))
        return None if raw is None else dict(orjson.loads(raw))

    async def list(self, *, subject: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Open items, oldest first (only those about `subject`, if given)."""
        ids = await self._call(self._redis.zrange(self._keys.serious_open, 0, limit - 1))
        if not ids:
            return []
        raws = await self._call(self._redis.hmget(self._keys.serious_reports, ids))
        items = [dict(orjson.loads(raw)) for raw in raws if raw is not None]
        return [item for item in items if subject is None or item["subject"] == subject]
