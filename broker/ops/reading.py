"""Reading what the router set aside: the blocked stream and the escalation queue.

Reading never changes anything: the stream is not consumed by reading it, and
escalations looked at are put back. Decisions on them live in broker/ops/blocked.py and
broker/ops/escalations.py.

The blocked stream can hold millions of records, and reading one costs about 0.15 ms of
this process's CPU, so nothing here reads it from the start when it can seek instead:
- `find_blocked` (broker/ops/find.py) goes straight to an offset it has seen before
  (kept in Redis), else seeks to the time the trace id carries (trace ids are UUIDv7,
  broker/core/recorder.py) or the flight recorder knows, and reads from the start only for
  what that missed;
- `tail_blocked` reads windows of offsets backwards from the end until it has enough;
- `page_blocked` reads forwards from an offset or a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage

from broker.amqp.failover import connect_config
from broker.amqp.streams import NAMED_OFFSETS, Offset, ReadStats, StreamReader
from broker.config import BrokerConfig
from broker.core.records import BlockedFilter, Record, StreamEntry, parse_record
from broker.ops.amqp import SEEK_SLACK_MS, amqp_errors, blocked_reader, entry_of, seek_at

# Backwards windows start this large and double, so a rare filter still ends quickly.
FIRST_WINDOW = 512
# Reading "to the end" of a stream that never pauses (a flood) stops after this long.
END_DEADLINE_S = 10.0
# A page read forwards stops after this long and says where to continue.
PAGE_DEADLINE_S = 30.0


def start_offset(offset: str | int, since_ms: int | None) -> Offset:
    """The x-stream-offset to attach at: a time when `since_ms` is given, else the offset.

    A time attaches at a chunk boundary at or before it, so callers still filter records
    by their own time (BlockedFilter.since_ms)."""
    if since_ms is not None:
        return datetime.fromtimestamp(since_ms // 1000, tz=UTC)
    if isinstance(offset, int) or offset in NAMED_OFFSETS:
        return offset
    if offset.isdigit():
        return int(offset)
    raise ValueError(f"offset must be first, last, next or a number, not {offset!r}")


# -- reading forwards ----------------------------------------------------------------------


async def stream_blocked(
    config: BrokerConfig,
    *,
    offset: Offset = "first",
    idle_timeout: float | None = 1.0,
    prefetch: int = 500,
) -> AsyncGenerator[StreamEntry, None]:
    """Yield blocked records from `offset` (a name, a number or a datetime) as they come;
    stop after `idle_timeout` seconds without one, or never when it is None."""
    async with blocked_reader(config, prefetch) as reader:
        read = reader.read(offset, idle_timeout=idle_timeout)
        async with contextlib.aclosing(read) as messages:
            async for message in messages:
                yield entry_of(message)


async def read_blocked(
    config: BrokerConfig,
    *,
    offset: Offset = "first",
    limit: int = 100,
    idle_timeout: float = 1.0,
) -> list[StreamEntry]:
    """Read up to `limit` blocked records from `offset` ('first', 'last', 'next', a number
    or a datetime), stopping after `idle_timeout` seconds without a new one."""
    async with blocked_reader(config, min(max(limit, 1), 1000)) as reader:
        read = reader.read(offset, limit=max(limit, 1), idle_timeout=idle_timeout)
        async with contextlib.aclosing(read) as messages:
            return [entry_of(message) async for message in messages]


async def page_blocked(
    config: BrokerConfig,
    wanted: BlockedFilter,
    *,
    offset: Offset,
    limit: int = 50,
    idle_timeout: float = 1.0,
) -> tuple[list[StreamEntry], int | None]:
    """The first `limit` records matching `wanted` from `offset` on, and the offset to
    continue from (None when the end of the stream was reached)."""
    found: list[StreamEntry] = []
    newest = None
    async with blocked_reader(config) as reader:
        read = reader.read(offset, idle_timeout=idle_timeout, deadline_s=PAGE_DEADLINE_S)
        async with contextlib.aclosing(read) as messages:
            async for message in messages:
                newest = message.offset
                entry = entry_of(message)
                if wanted.matches(entry.record):
                    found.append(entry)
                    if len(found) >= limit:
                        return found, newest + 1
        if newest is not None and reader.stopped_by_deadline:
            return found, newest + 1  # not the end: the stream was still going
    return found, None


# -- reading backwards ---------------------------------------------------------------------


async def tail_blocked(
    config: BrokerConfig,
    wanted: BlockedFilter,
    *,
    offset: Offset | None = None,
    limit: int = 50,
    idle_timeout: float = 1.0,
    stats: ReadStats | None = None,
) -> list[StreamEntry]:
    """The newest `limit` records matching `wanted` between `offset` (default: where
    `wanted.since_ms` starts, else the start of the stream) and its end, oldest first."""
    limit = max(limit, 1)
    async with blocked_reader(config, stats=stats) as reader:
        newest_chunk = await reader.first_offset("last", max(idle_timeout, 2.0))
        if newest_chunk is None:
            return []
        low = await _lower_bound(reader, wanted, offset, newest_chunk, idle_timeout)
        if low is None:
            return []
        return await _backwards(reader, wanted, low, newest_chunk, limit, idle_timeout)


async def _lower_bound(
    reader: StreamReader,
    wanted: BlockedFilter,
    offset: Offset | None,
    newest_chunk: int,
    idle_timeout: float,
) -> int | None:
    """The lowest offset a tail may go back to, or None when nothing can match."""
    if isinstance(offset, int):
        return offset
    if offset == "last":
        return newest_chunk
    if offset == "next":
        return None
    if isinstance(offset, datetime):
        return await reader.first_offset(offset, idle_timeout)
    if wanted.since_ms is not None:
        return await reader.first_offset(seek_at(wanted.since_ms - SEEK_SLACK_MS), idle_timeout)
    return 0


async def _backwards(
    reader: StreamReader,
    wanted: BlockedFilter,
    low: int,
    newest_chunk: int,
    limit: int,
    idle_timeout: float,
) -> list[StreamEntry]:
    kept: list[StreamEntry] = []
    size = max(FIRST_WINDOW, limit)
    start, until = max(low, newest_chunk - size), None
    while True:
        window, first_seen = await _window(
            reader, wanted, start, until, idle_timeout, reaches=newest_chunk
        )
        kept = window + kept
        # Done with enough matches, at the lower bound, or at the stream's first record
        # (retention may have removed what came before `start`).
        if len(kept) >= limit or start <= low or first_seen is None or first_seen > start:
            return kept[-limit:]
        size *= 2
        start, until = max(low, start - size), start - 1


async def _window(
    reader: StreamReader,
    wanted: BlockedFilter,
    start: int,
    until: int | None,
    idle_timeout: float,
    *,
    reaches: int | None = None,
) -> tuple[list[StreamEntry], int | None]:
    """Matching records of offsets start..until (until None: to the end), and the first
    offset the stream actually had there."""
    matched: list[StreamEntry] = []
    first_seen = None
    # Only the newest window has no known end; under a flood it would never go idle.
    deadline = END_DEADLINE_S if until is None else None
    read = reader.read(
        start, until=until, idle_timeout=idle_timeout, deadline_s=deadline, reaches=reaches
    )
    async with contextlib.aclosing(read) as messages:
        async for message in messages:
            if first_seen is None:
                first_seen = message.offset
            if until is not None and message.offset > until:
                break
            entry = entry_of(message)
            if wanted.matches(entry.record):
                matched.append(entry)
    return matched, first_seen


# -- escalations ---------------------------------------------------------------------------


async def read_escalations(
    config: BrokerConfig, *, limit: int = 100, remove: bool = False
) -> list[Record]:
    """Pending escalation records; left in the queue unless `remove` is set. An entry
    that is not a router's record comes back as an `unparseable` one (broker/core/records.py)."""
    with amqp_errors():
        return await _read_escalations(config, limit, remove)


async def _read_escalations(config: BrokerConfig, limit: int, remove: bool) -> list[Record]:
    connection = await connect_config(config)
    records: list[Record] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(config.topology.escalations_queue, ensure=False)
        held: list[AbstractIncomingMessage] = []
        while len(records) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            records.append(parse_record(message.body, message.headers or {}))
            held.append(message)
        for message in held:
            if remove:
                await message.ack()
            else:
                await message.nack(requeue=True)
    return records
