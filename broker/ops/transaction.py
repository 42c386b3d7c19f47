"""One transactional AMQP channel for a review: the escalations it holds, what it publishes
(a delivery, a blocked record) and the acks all take effect at its commit, or not at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.abc import AbstractChannel as UnderlayChannel

from broker.amqp.errors import AMQP_ERRORS
from broker.amqp.failover import connect_config
from broker.config import BrokerConfig
from broker.core.records import Record, parse_record
from broker.errors import ReviewError
from broker.ops.amqp import amqp_errors
from broker.router import outcome_record, record_headers, trust_headers
from broker.router.pipeline import Outcome

COMMIT_UNKNOWN = "commit_unknown"
_MAX_HELD = 10_000
_TAKE_ATTEMPTS = 3
# Quorum queues may drop a message returned too often (RabbitMQ 4.0 sets a default
# delivery-limit of 20); an escalation returned this often goes back as a fresh copy.
_REFRESH_AFTER_RETURNS = 10


@dataclass
class Held:
    """An escalation taken off its queue with basic.get; ours until acked or returned."""

    message: AbstractIncomingMessage
    record: Record

    @property
    def trace_id(self) -> str:
        return str(self.record.get("trace_id") or "")


class Transaction:
    """A channel in transaction mode: publishes, acks and returns take effect together at
    commit; closing the channel without a commit returns everything held."""

    def __init__(self, config: BrokerConfig, channel: AbstractChannel, underlay: UnderlayChannel):
        self._config = config
        self._channel = channel
        self._underlay = underlay
        self.held: list[Held] = []

    async def take_all(self, limit: int = _MAX_HELD) -> list[Held]:
        """Hold every pending escalation (up to `limit`)."""
        queue = await self._channel.get_queue(self._config.topology.escalations_queue, ensure=False)
        while len(self.held) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            record = parse_record(message.body, message.headers or {})
            self.held.append(Held(message, record))
        return self.held

    async def take(self, trace_id: str) -> Held:
        """Hold the escalation with this trace id, retrying while someone else holds it."""
        for attempt in range(_TAKE_ATTEMPTS):
            for held in await self.take_all():
                if held.trace_id == trace_id:
                    return held
            await self.commit()
            await asyncio.sleep(0.2 * (attempt + 1))
        raise ReviewError(
            f"no pending escalation {trace_id} (decided, expired, or held by another "
            "reviewer right now)",
            code="not_pending",
        )

    async def publish(
        self,
        exchange_name: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any],
        **props: Any,
    ) -> None:
        """Publish inside the transaction ('' is the default exchange)."""
        exchange = (
            self._channel.default_exchange
            if exchange_name == ""
            else await self._channel.get_exchange(exchange_name, ensure=False)
        )
        message = aio_pika.Message(
            body,
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **props,
        )
        await exchange.publish(message, routing_key=routing_key)

    async def deliver(self, raw: bytes, outcome: Outcome, extra: dict[str, Any]) -> None:
        """The verified (canonical) bytes to the recipient's queue, with the decision in
        headers."""
        assert outcome.envelope is not None
        env = outcome.envelope
        headers = {**trust_headers(outcome), **extra}
        topology = self._config.topology
        await self.publish(
            topology.deliver_exchange, env.recipient, raw, headers, message_id=env.id
        )

    async def block(self, raw: bytes, outcome: Outcome, extra: dict[str, Any]) -> None:
        """A record for the blocked stream, as the router writes them."""
        headers = record_headers(outcome)
        body = orjson.dumps(outcome_record(raw, outcome))
        # Through the exchange, not the default one: the router's login (the sweeper runs
        # in routers) may write only trust.deliver, trust.blocked and trust.escalations.
        exchange = self._config.topology.blocked_exchange
        await self.publish(exchange, "", body, {**headers, **extra}, message_id=outcome.trace_id)

    async def commit(self, done: Iterable[Held] = (), *, decisive: bool = False) -> None:
        """Ack `done`, return every other held escalation, and commit it all at once.

        A `decisive` commit whose answer never arrives raises ReviewError(COMMIT_UNKNOWN):
        it may or may not have happened."""
        finished = {id(held) for held in done}
        for held in self.held:
            if id(held) in finished:
                await held.message.ack()
            else:
                await self._give_back(held)
        self.held = []
        try:
            await self._underlay.tx_commit()
        except AMQP_ERRORS as exc:
            if not decisive:
                raise ReviewError(f"RabbitMQ failed: {exc!r}", code="amqp_unavailable") from exc
            raise ReviewError(
                f"the commit's outcome is unknown ({type(exc).__name__}); the decision stays "
                "recorded as pending: check the recipient before acting again",
                code=COMMIT_UNKNOWN,
            ) from exc

    async def _give_back(self, held: Held) -> None:
        count = (held.message.headers or {}).get("x-delivery-count")
        if not isinstance(count, int) or count < _REFRESH_AFTER_RETURNS:
            await held.message.nack(requeue=True)
            return
        headers = {k: v for k, v in (held.message.headers or {}).items() if k != "x-delivery-count"}
        exchange = self._config.topology.escalations_exchange
        await self.publish(
            exchange, "", held.message.body, headers, message_id=held.message.message_id
        )
        await held.message.ack()


@contextlib.asynccontextmanager
async def transaction(config: BrokerConfig) -> AsyncIterator[Transaction]:
    """A transactional channel on a connection of its own; AMQP errors become ReviewError."""
    with amqp_errors():
        connection = await connect_config(config)
        async with connection:
            channel = await connection.channel(publisher_confirms=False)
            underlay = await channel.get_underlay_channel()
            await underlay.tx_select()
            yield Transaction(config, channel, underlay)
