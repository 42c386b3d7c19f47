"""Atomic outcomes: publish a message's outcome and ack it in one AMQP transaction.

Publisher confirms followed by an ack leave a window: a router killed after the confirm
but before the ack sees the message redelivered and publishes it again. Inside a
transaction (tx.select on the consuming channel) the publish and the ack commit
together: either both happen or neither does, so a redelivered message was never
published. Commits are grouped: while one commit is in flight, new outcomes queue up
and go out together in the next, so a busy router pays one round trip for many messages.
Commit-ok is the broker's confirmation of every publish in the batch.

Inside a transaction the frames of a batch are queued for the socket without waiting for
each to be written (aiormq's `wait=False`): they go out in order on one channel, and the
commit-ok that is still awaited covers every publish and ack before it. Waiting per frame
cost a trip through the event loop per publish and per ack (bench/: +15 % throughput
without it, docs/PERFORMANCE.md section 7).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractMessage
from aio_pika.exceptions import ChannelInvalidStateError
from aiormq.abc import AbstractChannel as UnderlayChannel

from broker.grouping import GroupQueue

log = logging.getLogger("broker.committer")


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to publish inside a commit: where it goes and what it is."""

    exchange: str
    routing_key: str
    message: AbstractMessage


@dataclass(frozen=True, slots=True)
class _Pending:
    message: AbstractIncomingMessage
    publish: Outbound | None
    requeue: bool


class TransactionalCommitter:
    """Serialises publish+ack pairs into grouped transactions on one channel."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._groups: GroupQueue[_Pending] = GroupQueue(self._commit_batch)
        self._tx_channel: UnderlayChannel | None = None
        self.commits = 0

    async def commit(self, message: AbstractIncomingMessage, publish: Outbound | None) -> None:
        """Publish (if given) and ack `message` atomically; returns once committed."""
        await self._groups.submit(_Pending(message, publish, requeue=False))

    async def requeue(self, message: AbstractIncomingMessage) -> None:
        """Return `message` to its queue (nack with requeue), committed."""
        await self._groups.submit(_Pending(message, None, requeue=True))

    async def _commit_batch(self, batch: list[_Pending]) -> list[None]:
        underlay = await self._channel.get_underlay_channel()
        # The concrete channel: its basic_publish takes `wait` (the abstract one does not).
        assert isinstance(underlay, aiormq.Channel)
        if underlay is not self._tx_channel:
            # A fresh channel (first use, or after a robust reconnect) starts outside a tx.
            await underlay.tx_select()
            self._tx_channel = underlay
        try:
            for item in batch:
                if not _delivered_on(item.message, underlay):
                    # Delivered on a channel that has since closed: the broker already
                    # requeued it, so neither publish nor ack (the redelivery handles it).
                    continue
                out, tag = item.publish, item.message.delivery_tag
                if out is not None:
                    await underlay.basic_publish(
                        out.message.body,
                        exchange=out.exchange,
                        routing_key=out.routing_key,
                        properties=out.message.properties,
                        mandatory=True,
                        wait=False,
                    )
                assert tag is not None, "the router consumes with acks"
                if item.requeue:
                    await underlay.basic_nack(tag, requeue=True, wait=False)
                else:
                    await underlay.basic_ack(tag, wait=False)
            await underlay.tx_commit()
            self.commits += 1
            return [None] * len(batch)
        except Exception:
            # Never let a half-built batch ride along with the next commit.
            with contextlib.suppress(Exception):
                await underlay.tx_rollback()
            raise


def _delivered_on(message: AbstractIncomingMessage, underlay: UnderlayChannel) -> bool:
    try:
        return message.channel is underlay
    except ChannelInvalidStateError:
        return False
