"""The SDK's line to the broker's negotiator: requests on trust.handshake, each answered on
RabbitMQ's direct reply-to, and the check of the broker's signed handshake result."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from broker.core.handshake import Proof
from broker.core.signing import signed_by
from broker.errors import EvidenceError

_DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def check_result(result: dict[str, Any], agent: str, expected_broker: str | None) -> Proof:
    """The broker's signed result must name us and be signed by the broker (pinned if asked)."""
    broker = result.get("broker")
    if not isinstance(broker, str) or (expected_broker is not None and broker != expected_broker):
        raise EvidenceError("result comes from another broker", code="handshake_bad_broker")
    if result.get("agent") != agent or not signed_by(result, broker):
        raise EvidenceError("result is not signed by the broker", code="handshake_bad_broker")
    return Proof(agent, int(result["verified_at"]), int(result["expires_at"]))


class RequestLine:
    """Requests to one exchange over a single channel, each answered on RabbitMQ's direct
    reply-to and matched by correlation id. Opening a channel and a consumer per request
    cost more than the broker's whole warm-handshake check (bench/handshake.py)."""

    def __init__(self, connection: AbstractRobustConnection, exchange: str) -> None:
        self._connection = connection
        self._exchange_name = exchange
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._opening = asyncio.Lock()

    async def request(self, body: bytes, timeout: float, *, user_id: str | None = None) -> bytes:
        """Publish `body` and wait up to `timeout` seconds for its reply. `user_id` (the
        AMQP login, which RabbitMQ checks) tells the broker who is asking."""
        exchange = await self._open()
        correlation_id = uuid.uuid4().hex
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = reply
        try:
            message = aio_pika.Message(
                body, reply_to=_DIRECT_REPLY_TO, correlation_id=correlation_id, user_id=user_id
            )
            await exchange.publish(message, routing_key="", mandatory=True)
            return await asyncio.wait_for(reply, timeout)
        finally:
            self._pending.pop(correlation_id, None)

    async def _open(self) -> AbstractExchange:
        async with self._opening:
            if self._channel is None or self._channel.is_closed or self._exchange is None:
                # No confirms: the reply is the confirmation, and an unroutable request
                # comes back as a basic.return at once (see _on_return).
                channel = await self._connection.channel(publisher_confirms=False)
                channel.return_callbacks.add(self._on_return)
                replies = await channel.get_queue(_DIRECT_REPLY_TO, ensure=False)
                await replies.consume(self._on_reply, no_ack=True)
                self._exchange = await channel.get_exchange(self._exchange_name, ensure=False)
                self._channel = channel
            return self._exchange

    def _resolve(self, correlation_id: str | None) -> asyncio.Future[bytes] | None:
        waiting = self._pending.get(correlation_id or "")
        return None if waiting is None or waiting.done() else waiting

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiting = self._resolve(message.correlation_id)
        if waiting is not None:  # a late reply to a request that timed out is dropped
            waiting.set_result(message.body)

    def _on_return(self, _channel: Any, message: AbstractIncomingMessage) -> None:
        waiting = self._resolve(message.correlation_id)
        if waiting is not None:
            waiting.set_exception(
                EvidenceError(
                    f"nothing serves {self._exchange_name}: is a router with a broker key running?",
                    code="handshake_unavailable",
                )
            )
