"""Reading what the router set aside: the blocked stream and the escalation queue."""

from __future__ import annotations

import asyncio
import base64
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
