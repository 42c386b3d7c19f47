"""The decision log (a capped stream of every decision) and the flight recorder (each
decision's trace, with the events that came after it), kept trace_ttl_ms."""

from __future__ import annotations

from typing import Any

import orjson

from broker.store.base import StoreBase, text
from broker.store.batch import Command


class Traces(StoreBase):
    """Decision log entries and flight-recorder traces (finish.lua writes them for every
    decision that finishes; record_decision for those that never get that far)."""

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
        return None if raw is None else text(raw)

    async def add_trace_event(self, trace_id: str, event: dict[str, Any]) -> None:
        """Append a later event (report, release, approval) to a decision's trace."""
        key = self.keys.trace_events(trace_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, orjson.dumps(event))
            pipe.pexpire(key, self._trace_ttl_ms)
            await self._call(pipe.execute())
