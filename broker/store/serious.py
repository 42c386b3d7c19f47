"""The review queue of serious reports: high or critical reports that no independent
organisation has corroborated yet, waiting for a security reviewer (store side).

One report cannot put a peer under observation or slash its bond by itself: a slanderer
could. Each such report becomes an item here; a reviewer confirms it (the penalty then
applies) or dismisses it (`broker/router/report_review.py`). Items per reporter are bounded, so
a slanderer cannot flood the queue.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis

from broker.store.keys import Keys
from broker.store.lua import lua_script
from broker.store.part import Call, StorePart

T = TypeVar("T")


def _pair(item: dict[str, Any]) -> str:
    """The (reporter organisation, subject) an item belongs to; a reporter without an
    organisation is its own."""
    return f"{item.get('reporter_org') or item['reporter']}|{item['subject']}"


class SeriousQueue(StorePart):
    """Open and closed serious-report items in Redis (the caller maps Redis errors)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, call: Call) -> None:
        super().__init__(client, keys, call)
        self._open = client.register_script(lua_script("serious_open"))
        self._close = client.register_script(lua_script("serious_close"))

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
