"""Reading what the router set aside: the blocked stream and the escalation queue."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from broker.config import BrokerConfig


@dataclass(frozen=True)
class StreamEntry:
    """One record of the blocked stream with its stream offset."""

    offset: int
    record: dict[str, Any]


async def read_blocked(
    config: BrokerConfig,
    *,
    offset: int | str = "first",
    limit: int = 100,
    idle_timeout: float = 1.0,
) -> list[StreamEntry]:
    """Read up to `limit` blocked records from `offset` ('first', 'last', 'next' or a
    number), stopping after `idle_timeout` seconds without a new one."""
    connection = await aio_pika.connect(config.amqp_vhost_url)
    entries: list[StreamEntry] = []
    async with connection:
        channel = await connection.channel()
        # Stream consumers must set a prefetch and ack; acking does not remove anything.
        await channel.set_qos(prefetch_count=min(max(limit, 1), 1000))
        queue = await channel.get_queue(config.topology.blocked_stream, ensure=False)
        async with queue.iterator(arguments={"x-stream-offset": offset}) as stream:
            with contextlib.suppress(asyncio.TimeoutError):
                while len(entries) < limit:
                    message = await asyncio.wait_for(anext(stream), idle_timeout)
                    entries.append(_entry(message))
                    await message.ack()
    return entries


def _entry(message: AbstractIncomingMessage) -> StreamEntry:
    headers = message.headers or {}
    offset = headers.get("x-stream-offset", -1)
    return StreamEntry(int(offset) if isinstance(offset, int) else -1, orjson.loads(message.body))


async def read_escalations(
    config: BrokerConfig, *, limit: int = 100, remove: bool = False
) -> list[dict[str, Any]]:
    """Pending escalation records; left in the queue unless `remove` is set."""
    connection = await aio_pika.connect(config.amqp_vhost_url)
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
