"""Finding one blocked record by its trace id without reading the stream from the start:
an offset seen before (kept in Redis), else the time its trace id carries or the flight
recorder knows, and only what that missed from the start."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from broker.amqp.streams import ATTACH_WAIT_S, Offset, ReadStats, StreamReader
from broker.config import BrokerConfig
from broker.core.recorder import trace_time_ms
from broker.core.records import StreamEntry
from broker.ops.amqp import SEEK_SLACK_MS, blocked_reader, entry_of, seek_at, trace_of

# A record is written within moments of the time its trace id carries (the commit); once
# the stream shows records this much newer, the one sought is not further on.
WRITTEN_WITHIN_MS = 60_000
# Review actions that write the record of their trace to the stream when they happen.
_WRITES_STREAM = ("reject", "expire")


class OffsetIndex(Protocol):
    """Where find_blocked remembers offsets, and what it asks for a time to seek to."""

    async def blocked_offset(self, trace_id: str) -> int | None: ...

    async def remember_blocked_offset(self, trace_id: str, offset: int) -> None: ...

    async def review(self, trace_id: str) -> dict[str, Any] | None: ...

    async def trace(self, trace_id: str) -> dict[str, Any] | None: ...


async def find_blocked(
    config: BrokerConfig,
    trace_id: str,
    *,
    offset: Offset | None = None,
    index: OffsetIndex | None = None,
    idle_timeout: float = 1.0,
    stats: ReadStats | None = None,
) -> StreamEntry | None:
    """The blocked record with this trace id, or None. With `offset`, the search starts
    there; otherwise it seeks (see the module docstring) and remembers where it found
    the record in `index`, so the next look is one read."""
    async with blocked_reader(config, stats=stats) as reader:
        entry = await _locate(reader, trace_id, offset, index, idle_timeout)
    if entry is not None and index is not None:
        await index.remember_blocked_offset(trace_id, entry.offset)
    return entry


async def _locate(
    reader: StreamReader,
    trace_id: str,
    offset: Offset | None,
    index: OffsetIndex | None,
    idle_timeout: float,
) -> StreamEntry | None:
    # The newest chunk's first offset: up to there a pause is load, not the end.
    reaches = await reader.first_offset("last", max(idle_timeout, ATTACH_WAIT_S))
    if reaches is None:
        return None  # an empty stream

    async def scan(at: Offset, **options: Any) -> StreamEntry | None:
        return await _scan(reader, trace_id, at, idle_timeout, reaches=reaches, **options)

    if index is not None:
        known = await index.blocked_offset(trace_id)
        if known is not None:
            found = await scan(known, limit=1)
            if found is not None:
                return found
    if offset is not None:
        return await scan(offset)
    written = await _written_ms(index, trace_id)
    if written is None:
        return await scan("first")
    start = await reader.first_offset(seek_at(written - SEEK_SLACK_MS), max(idle_timeout, 2.0))
    if start is None:  # nothing at or after that time
        return await scan("first")
    found = await scan(start, past_ms=written + WRITTEN_WITHIN_MS)
    if found is not None or start == 0:
        return found
    # Not where its time said (clocks far apart, or an old random trace id): the rest.
    return await scan("first", until=start - 1)


async def _written_ms(index: OffsetIndex | None, trace_id: str) -> int | None:
    """About when the record of `trace_id` was written to the stream, if anything says."""
    if index is not None:
        review = await index.review(trace_id)
        if review is not None and review.get("action") in _WRITES_STREAM:
            at = review.get("at")
            return at if isinstance(at, int) else None
    made = trace_time_ms(trace_id)
    if made is not None or index is None:
        return made
    trace = await index.trace(trace_id)
    committed = trace.get("committed_ms") if trace else None
    return committed if isinstance(committed, int) else None


async def _scan(
    reader: StreamReader,
    trace_id: str,
    at: Offset,
    idle_timeout: float,
    *,
    until: int | None = None,
    limit: int | None = None,
    past_ms: int | None = None,
    reaches: int | None = None,
) -> StreamEntry | None:
    read = reader.read(at, until=until, limit=limit, idle_timeout=idle_timeout, reaches=reaches)
    async with contextlib.aclosing(read) as messages:
        async for message in messages:
            traced = trace_of(message)
            if traced == trace_id:
                entry = entry_of(message)
                # The header is a label: the record itself must agree with it.
                if entry.record.get("trace_id") == trace_id:
                    return entry
            made = trace_time_ms(traced)
            if past_ms is not None and made is not None and made > past_ms:
                return None
    return None
