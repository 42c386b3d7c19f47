"""Reading what the router set aside: the blocked stream and the escalation queue.

Reading never changes anything: the stream is not consumed by reading it, and
escalations looked at are put back. Decisions on them live in broker/workflow.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity

from broker.config import BrokerConfig
from broker.envelope import decode_envelope
from broker.errors import EnvelopeError, TrustBrokerError
from broker.failover import connect_config

# Offsets the stream understands by name; anything else is a number or a time.
NAMED_OFFSETS = ("first", "last", "next")
Offset = int | str | datetime


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


@dataclass(frozen=True)
class StreamEntry:
    """One record of the blocked stream with its stream offset."""

    offset: int
    record: dict[str, Any]


@dataclass(frozen=True)
class BlockedFilter:
    """Which blocked records a reviewer wants; None matches anything."""

    sender: str | None = None
    recipient: str | None = None
    reason: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        """True when `record` passes every filter that is set."""
        for name in ("sender", "recipient", "reason"):
            wanted = getattr(self, name)
            if wanted is not None and record.get(name) != wanted:
                return False
        if self.since_ms is None and self.until_ms is None:
            return True
        at = record_time_ms(record)
        if at is None:
            return False
        return (self.since_ms is None or at >= self.since_ms) and (
            self.until_ms is None or at <= self.until_ms
        )


def record_time_ms(record: dict[str, Any]) -> int | None:
    """When the router received the message; for an undeliverable record (which has no
    receipt time) the envelope's own created_at, which the router held within its skew."""
    received = record.get("received_ms")
    if isinstance(received, int):
        return received
    try:
        created: int = decode_envelope(base64.b64decode(record["raw_b64"])).envelope.created_at
    except (EnvelopeError, KeyError, ValueError, TypeError):
        return None
    return created


def iso_ms(ms: int) -> str:
    """Unix milliseconds as an ISO-8601 UTC time, e.g. 2025-06-15T15:06:40.000Z."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


async def stream_blocked(
    config: BrokerConfig,
    *,
    offset: Offset = "first",
    idle_timeout: float | None = 1.0,
    prefetch: int = 500,
) -> AsyncGenerator[StreamEntry, None]:
    """Yield blocked records from `offset` (a name, a number or a datetime) as they come;
    stop after `idle_timeout` seconds without one, or never when it is None."""
    with amqp_errors():
        connection = await connect_config(config)
        async with connection:
            channel = await connection.channel()
            # Stream consumers must set a prefetch and ack; acking does not remove anything.
            await channel.set_qos(prefetch_count=prefetch)
            queue = await channel.get_queue(config.topology.blocked_stream, ensure=False)
            async with queue.iterator(arguments={"x-stream-offset": offset}) as stream:
                while True:
                    try:
                        message = await asyncio.wait_for(anext(stream), idle_timeout)
                    except TimeoutError:
                        return
                    await message.ack()
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
    entries: list[StreamEntry] = []
    prefetch = min(max(limit, 1), 1000)
    stream = stream_blocked(config, offset=offset, idle_timeout=idle_timeout, prefetch=prefetch)
    async with contextlib.aclosing(stream) as records:
        async for entry in records:
            entries.append(entry)
            if len(entries) >= limit:
                break
    return entries


async def tail_blocked(
    config: BrokerConfig,
    wanted: BlockedFilter,
    *,
    offset: Offset = "first",
    limit: int = 50,
    idle_timeout: float = 1.0,
) -> list[StreamEntry]:
    """The last `limit` records matching `wanted` between `offset` and the end of the stream."""
    kept: deque[StreamEntry] = deque(maxlen=max(limit, 1))
    async with contextlib.aclosing(
        stream_blocked(config, offset=offset, idle_timeout=idle_timeout)
    ) as records:
        async for entry in records:
            if wanted.matches(entry.record):
                kept.append(entry)
    return list(kept)


async def find_blocked(
    config: BrokerConfig, trace_id: str, *, offset: Offset = "first", idle_timeout: float = 1.0
) -> StreamEntry | None:
    """The blocked record with this trace id, searching from `offset`; None if absent."""
    async with contextlib.aclosing(
        stream_blocked(config, offset=offset, idle_timeout=idle_timeout)
    ) as records:
        async for entry in records:
            if entry.record.get("trace_id") == trace_id:
                return entry
    return None


def _entry(message: AbstractIncomingMessage) -> StreamEntry:
    headers = message.headers or {}
    offset = headers.get("x-stream-offset", -1)
    position = int(offset) if isinstance(offset, int) else -1
    if _text(headers.get("x-trust-action")) == "deliver":
        # A delivery no agent queue was bound for, rerouted here by trust.deliver's
        # alternate exchange: the envelope itself, with the decision in its headers.
        return StreamEntry(position, _undeliverable_record(message, headers))
    return StreamEntry(position, orjson.loads(message.body))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _undeliverable_record(
    message: AbstractIncomingMessage, headers: dict[str, Any]
) -> dict[str, Any]:
    try:
        envelope = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        envelope = {}
    reasons = ["undeliverable", *filter(None, _text(headers.get("x-trust-reasons")).split(","))]
    score = _text(headers.get("x-trust-score"))
    return {
        "trace_id": _text(headers.get("x-trust-trace-id")),
        "received_ms": None,
        "message_id": message.message_id,
        "sender": envelope.get("sender"),
        "recipient": envelope.get("recipient"),
        "kind": envelope.get("kind"),
        "reason": "undeliverable",
        "error_field": None,
        "decision": {
            "action": "block", "tier": _text(headers.get("x-trust-tier")),
            "composite": float(score) if score else None,
            "dimensions": orjson.loads(_text(headers.get("x-trust-dimensions")) or "{}"),
            "weakest": None, "reasons": reasons,
            "remediation": "the recipient is registered but no queue is bound for it; "
            "re-provision the agent",
            "policy_version": headers.get("x-trust-policy-version"), "gate": "undeliverable",
        },
        "raw_b64": base64.b64encode(message.body).decode("ascii"),
    }  # fmt: skip


async def read_escalations(
    config: BrokerConfig, *, limit: int = 100, remove: bool = False
) -> list[dict[str, Any]]:
    """Pending escalation records; left in the queue unless `remove` is set."""
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
            records.append(orjson.loads(message.body))
            held.append(message)
        for message in held:
            if remove:
                await message.ack()
            else:
                await message.nack(requeue=True)
    return records
