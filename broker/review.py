"""Reading what the router set aside: the blocked stream and the escalation queue.

Reading never changes anything: the stream is not consumed by reading it, and
escalations looked at are put back. Decisions on them live in broker/workflow.py.

The blocked stream can hold millions of records, and reading one costs about 0.15 ms of
this process's CPU, so nothing here reads it from the start when it can seek instead:
- `find_blocked` goes straight to an offset it has seen before (kept in Redis), else
  seeks to the time the trace id carries (trace ids are UUIDv7, broker/recorder.py) or
  the flight recorder knows, and reads from the start only for what that missed;
- `tail_blocked` reads windows of offsets backwards from the end until it has enough;
- `page_blocked` reads forwards from an offset or a time.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity

from broker.config import BrokerConfig
from broker.errors import TrustBrokerError
from broker.failover import connect_config
from broker.recorder import trace_time_ms
from broker.records import (
    BlockedFilter,
    StreamEntry,
    entry_trace_id,
    header_text,
    iso_ms,
    parse_record,
    record_time_ms,
)
from broker.streams import (
    ATTACH_WAIT_S,
    NAMED_OFFSETS,
    Offset,
    ReadStats,
    StreamMessage,
    StreamReader,
)

__all__ = [
    "NAMED_OFFSETS",
    "BlockedFilter",
    "Offset",
    "ReadStats",
    "ReviewError",
    "StreamEntry",
    "amqp_errors",
    "find_blocked",
    "iso_ms",
    "page_blocked",
    "read_blocked",
    "read_escalations",
    "record_time_ms",
    "start_offset",
    "stream_blocked",
    "tail_blocked",
]

# Seeking by time has a resolution of a second (an AMQP timestamp); this much earlier
# also covers NTP-synchronised clocks of routers and RabbitMQ. Clocks further apart only
# cost a read of the part before the seek (see _locate).
SEEK_SLACK_MS = 1_000
# A record is written within moments of the time its trace id carries (the commit); once
# the stream shows records this much newer, the one sought is not further on.
WRITTEN_WITHIN_MS = 60_000
# Backwards windows start this large and double, so a rare filter still ends quickly.
FIRST_WINDOW = 512
# Reading "to the end" of a stream that never pauses (a flood) stops after this long.
END_DEADLINE_S = 10.0
# A page read forwards stops after this long and says where to continue.
PAGE_DEADLINE_S = 30.0
# Review actions that write the record of their trace to the stream when they happen.
_WRITES_STREAM = ("reject", "expire")


class ReviewError(TrustBrokerError):
    """Reading or deciding what the router set aside failed or was refused; `code` says why."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def amqp_errors() -> Iterator[None]:
    """RabbitMQ's errors as ReviewError: they never leave this package's review modules."""
    try:
        yield
    except ChannelNotFoundEntity as exc:
        raise ReviewError(
            f"{exc.args[0] if exc.args else exc} (is the vhost right, and has a router "
            "started there?)",
            code="not_found",
        ) from None
    except (AMQPError, OSError) as exc:
        raise ReviewError(f"RabbitMQ unavailable: {exc!r}", code="amqp_unavailable") from exc


class OffsetIndex(Protocol):
    """Where find_blocked remembers offsets, and what it asks for a time to seek to."""

    async def blocked_offset(self, trace_id: str) -> int | None: ...

    async def remember_blocked_offset(self, trace_id: str, offset: int) -> None: ...

    async def review(self, trace_id: str) -> dict[str, Any] | None: ...

    async def trace(self, trace_id: str) -> dict[str, Any] | None: ...


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


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(max(ms, 0) // 1000, tz=UTC)


@contextlib.asynccontextmanager
async def _blocked(
    config: BrokerConfig, prefetch: int = 1000, stats: ReadStats | None = None
) -> AsyncIterator[StreamReader]:
    """A reader of the blocked stream; RabbitMQ's errors in the block become ReviewError."""
    with amqp_errors():
        async with StreamReader(
            config.amqp_vhost_urls, config.topology.blocked_stream, prefetch=prefetch, stats=stats
        ) as reader:
            yield reader


def _entry(message: StreamMessage) -> StreamEntry:
    headers = message.headers
    if header_text(headers.get("x-trust-action")) == "deliver":
        # A delivery no agent queue was bound for, rerouted here by trust.deliver's
        # alternate exchange: the envelope itself, with the decision in its headers.
        return StreamEntry(message.offset, _undeliverable_record(message))
    return StreamEntry(message.offset, parse_record(message.body, headers))


def _trace_of(message: StreamMessage) -> str:
    return entry_trace_id(message.headers, message.body)


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
    async with _blocked(config, prefetch) as reader:
        read = reader.read(offset, idle_timeout=idle_timeout)
        async with contextlib.aclosing(read) as messages:
            async for message in messages:
                yield _entry(message)


async def read_blocked(
    config: BrokerConfig,
    *,
    offset: Offset = "first",
    limit: int = 100,
    idle_timeout: float = 1.0,
) -> list[StreamEntry]:
    """Read up to `limit` blocked records from `offset` ('first', 'last', 'next', a number
    or a datetime), stopping after `idle_timeout` seconds without a new one."""
    async with _blocked(config, min(max(limit, 1), 1000)) as reader:
        read = reader.read(offset, limit=max(limit, 1), idle_timeout=idle_timeout)
        async with contextlib.aclosing(read) as messages:
            return [_entry(message) async for message in messages]


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
    async with _blocked(config) as reader:
        read = reader.read(offset, idle_timeout=idle_timeout, deadline_s=PAGE_DEADLINE_S)
        async with contextlib.aclosing(read) as messages:
            async for message in messages:
                newest = message.offset
                entry = _entry(message)
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
    async with _blocked(config, stats=stats) as reader:
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
        return await reader.first_offset(_at(wanted.since_ms - SEEK_SLACK_MS), idle_timeout)
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
            entry = _entry(message)
            if wanted.matches(entry.record):
                matched.append(entry)
    return matched, first_seen


# -- finding one record --------------------------------------------------------------------


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
    async with _blocked(config, stats=stats) as reader:
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
    start = await reader.first_offset(_at(written - SEEK_SLACK_MS), max(idle_timeout, 2.0))
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
            traced = _trace_of(message)
            if traced == trace_id:
                entry = _entry(message)
                # The header is a label: the record itself must agree with it.
                if entry.record.get("trace_id") == trace_id:
                    return entry
            made = trace_time_ms(traced)
            if past_ms is not None and made is not None and made > past_ms:
                return None
    return None


def _undeliverable_record(message: StreamMessage) -> dict[str, Any]:
    headers = message.headers
    try:
        envelope = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        envelope = {}
    if not isinstance(envelope, dict):
        envelope = {}
    listed = header_text(headers.get("x-trust-reasons")).split(",")
    reasons = ["undeliverable", *filter(None, listed)]
    return {
        "trace_id": _trace_of(message),
        "received_ms": None,
        "message_id": envelope.get("id") or message.message_id,
        "sender": envelope.get("sender"),
        "recipient": envelope.get("recipient"),
        "kind": envelope.get("kind"),
        "reason": "undeliverable",
        "error_field": None,
        "decision": {
            "action": "block", "tier": header_text(headers.get("x-trust-tier")),
            "composite": _number(header_text(headers.get("x-trust-score"))),
            "dimensions": _dimensions(header_text(headers.get("x-trust-dimensions"))),
            "weakest": None, "reasons": reasons,
            "remediation": "the recipient is registered but no queue is bound for it; "
            "re-provision the agent",
            "policy_version": headers.get("x-trust-policy-version"), "gate": "undeliverable",
        },
        "raw_b64": base64.b64encode(message.body).decode("ascii"),
    }  # fmt: skip


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _dimensions(text: str) -> dict[str, float]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float)}


# -- escalations ---------------------------------------------------------------------------


async def read_escalations(
    config: BrokerConfig, *, limit: int = 100, remove: bool = False
) -> list[dict[str, Any]]:
    """Pending escalation records; left in the queue unless `remove` is set. An entry
    that is not a router's record comes back as an `unparseable` one (broker/records.py)."""
    with amqp_errors():
        return await _read_escalations(config, limit, remove)


async def _read_escalations(config: BrokerConfig, limit: int, remove: bool) -> list[dict[str, Any]]:
    connection = await connect_config(config)
    records: list[dict[str, Any]] = []
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
