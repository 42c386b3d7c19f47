"""Outcomes: publish a message's outcome and ack it in one AMQP transaction.

Publisher confirms followed by an ack leave a window: a router killed after the confirm
but before the ack sees the message redelivered and publishes it again. Inside a
transaction (tx.select on the consuming channel) the publish and the ack go to the
broker together at tx.commit: a router that dies before its commit frame reached the
broker published and acked nothing, and one that dies after it has left the whole commit
to a broker that carries it out, so a redelivered message was never published. That is
all a transaction gives: RabbitMQ does not make it atomic across queues (rabbitmq.com,
"Broker Semantics"), so if the node running the channel dies in the middle of a commit,
any part of it may have taken effect. Such a commit raises CommitUnknown and calls each of
its items' `in_doubt` callback, from the committer's own task: the caller may be gone by
then (aiormq cancels the tasks of a channel's consumers when it closes). The router lists
those messages as in doubt (docs/RELIABILITY.md). Commits are grouped: while one
commit is in flight, new outcomes queue up and go out together in the next, so a busy
router pays one round trip for many messages. Commit-ok is the broker's confirmation of
every publish in the batch.

Inside a transaction the frames of a batch are queued for the socket without waiting for
each to be written (aiormq's `wait=False`): they go out in order on one channel, and the
commit-ok that is still awaited covers every publish and ack before it. Waiting per frame
cost a trip through the event loop per publish and per ack (bench/: +15 % throughput
without it, docs/PERFORMANCE.md section 7).

Every wait here has a deadline. A commit that has not answered within it (a node that
died or froze, a channel replaced during reconnection) fails every message of its batch
with CommitFailed and marks the committer broken: its owner drops the channel, which
makes the broker requeue every message delivered on it, uncommitted transaction
included, so each comes back redelivered and is routed once. An outcome counts as
committed only when commit-ok arrived for the very channel its message came on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractMessage
from aiormq.abc import AbstractChannel as UnderlayChannel

from broker.amqp.errors import AMQP_ERRORS, ChannelInvalidStateError
from broker.errors import BrokerUnavailable
from broker.grouping import GroupQueue

log = logging.getLogger("broker.amqp.committer")


class CommitFailed(BrokerUnavailable, ConnectionError):
    """The outcome was not committed: its message is (or will be) back on its queue."""


class CommitUnknown(CommitFailed):
    """The commit frame was sent and commit-ok never came: the broker may have carried out
    all of the commit, none of it, or (a node dying mid-commit) some of it."""


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
    in_doubt: Callable[[], None] | None = None


@dataclass(slots=True)
class _Attempt:
    """How far one commit got: a result per item written so far, and whether tx.commit
    was sent."""

    results: list[Exception | None] = field(default_factory=list)
    sent: bool = False

    def failed(self, batch: list[_Pending], why: str) -> list[Exception | None]:
        """Every item's error once the commit failed: items never written into it keep
        their own, the rest are unknown once tx.commit went out, else not committed."""
        kind = CommitUnknown if self.sent else CommitFailed
        written: list[Exception | None] = [result or kind(why) for result in self.results]
        return written + [CommitFailed(why) for _ in batch[len(written) :]]


class TransactionalCommitter:
    """Serialises publish+ack pairs into grouped transactions on one channel; each commit
    has `timeout_s` to complete, after which the committer is broken for good."""

    def __init__(
        self,
        channel: AbstractChannel,
        *,
        timeout_s: float = 10.0,
        on_broken: Callable[[str], None] | None = None,
        awake: Callable[[], bool] | None = None,
    ) -> None:
        self._channel = channel
        self._timeout_s = timeout_s
        self._on_broken = on_broken
        # False right after the process stood still (the router's watchdog): decisions
        # made before a pause are never committed after it.
        self._awake = awake
        self._groups: GroupQueue[_Pending] = GroupQueue(self._commit_batch)
        self._tx_channel: UnderlayChannel | None = None
        self.broken = ""
        self.commits = 0

    async def commit(
        self,
        message: AbstractIncomingMessage,
        publish: Outbound | None,
        *,
        in_doubt: Callable[[], None] | None = None,
    ) -> None:
        """Publish (if given) and ack `message` atomically; returns once committed, raises
        CommitFailed when it was not (the message then comes back), CommitUnknown when
        tx.commit went out and commit-ok never came. `in_doubt` is called in that last
        case, whether or not the caller is still waiting."""
        await self._groups.submit(_Pending(message, publish, requeue=False, in_doubt=in_doubt))

    async def requeue(self, message: AbstractIncomingMessage) -> None:
        """Return `message` to its queue (nack with requeue), committed."""
        await self._groups.submit(_Pending(message, None, requeue=True))

    def break_off(self, why: str, *, expected: bool = False) -> None:
        """Refuse every further commit; the owner is told once, to drop the channel.
        `expected` (a clean stop) logs at INFO rather than as a warning."""
        if self.broken:
            return
        self.broken = why
        level = logging.INFO if expected else logging.WARNING
        log.log(level, "commits stopped (%s): the channel is dropped, its messages come back", why)
        if self._on_broken is not None:
            self._on_broken(why)

    async def _commit_batch(self, batch: list[_Pending]) -> list[Exception | None]:
        if self.broken:
            raise CommitFailed(f"channel given up: {self.broken}")
        attempt = _Attempt()
        try:
            return await asyncio.wait_for(self._commit_now(batch, attempt), self._timeout_s)
        except TimeoutError:
            self.break_off(f"no commit-ok within {self._timeout_s:g}s")
            why = "the commit did not complete in time"
        except AMQP_ERRORS as exc:
            self.break_off(f"commit failed: {type(exc).__name__}")
            why = f"the commit failed: {type(exc).__name__}"
        if attempt.sent:
            # results covers the items written so far, a prefix of the batch
            written = zip(batch, attempt.results, strict=False)
            unknown = [item for item, result in written if result is None]
            log.warning(
                "a commit of %d outcomes got no commit-ok after tx.commit was sent: any part "
                "of it may have taken effect (listed by trust-broker in-doubt)", len(unknown)
            )  # fmt: skip
            for item in unknown:
                if item.in_doubt is not None:
                    item.in_doubt()
        return attempt.failed(batch, why)

    async def _commit_now(self, batch: list[_Pending], attempt: _Attempt) -> list[Exception | None]:
        underlay = await self._channel.get_underlay_channel()
        # The concrete channel: its basic_publish takes `wait` (the abstract one does not).
        assert isinstance(underlay, aiormq.Channel)
        if underlay is not self._tx_channel:
            # A fresh channel (first use, or after a robust reconnect) starts outside a tx.
            await underlay.tx_select()
            self._tx_channel = underlay
        if self._awake is not None and not self._awake():
            self.break_off("the process stood still before this commit")
            raise CommitFailed("the process stood still: its decisions are not committed")
        results = attempt.results
        for item in batch:
            if not _delivered_on(item.message, underlay):
                # Delivered on a channel that has since closed: the broker requeued it, so
                # neither publish nor ack, and its caller must not record an outcome.
                results.append(CommitFailed("delivered on a channel that has closed"))
                continue
            await _write(underlay, item)
            results.append(None)
        if any(result is None for result in results):
            attempt.sent = True
            await underlay.tx_commit()
            self.commits += 1
        return results


async def _write(underlay: aiormq.Channel, item: _Pending) -> None:
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


def _delivered_on(message: AbstractIncomingMessage, underlay: UnderlayChannel) -> bool:
    try:
        return message.channel is underlay
    except ChannelInvalidStateError:
        return False
