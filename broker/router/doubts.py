"""Listing outcomes whose commit is in doubt (broker/store/indoubt.py): tx.commit was sent
and commit-ok never came, so any part of the commit may have taken effect. Entries wait
here while Redis cannot take them, and are written once it answers."""

from __future__ import annotations

import asyncio
import hashlib

from aio_pika.abc import AbstractIncomingMessage

from broker.amqp.committer import Outbound
from broker.errors import StoreUnavailable
from broker.router.metrics import RouterMetrics
from broker.router.pipeline import Outcome
from broker.store.indoubt import IN_DOUBT_MAX, InDoubtEntry
from broker.store.redis import RedisStore


def in_doubt_entry(
    message: AbstractIncomingMessage, outcome: Outcome, published: Outbound, holder: str,
    now_ms: int,
) -> InDoubtEntry:  # fmt: skip
    """The list's entry for one outcome: ids and routing, never the body."""
    env = outcome.envelope
    return InDoubtEntry(
        id=env.id if env else "",
        sender=env.sender if env else "",
        action=outcome.decision.action.value,
        exchange=published.exchange,
        routing_key=published.routing_key,
        trace_id=outcome.trace_id,
        holder=holder,
        at_ms=now_ms,
        digest=hashlib.sha256(message.body).hexdigest(),
    )


class InDoubtLog:
    """The router's side of the in-doubt list: counted at once, written when Redis can."""

    def __init__(self, store: RedisStore, metrics: RouterMetrics) -> None:
        self._store = store
        self._metrics = metrics
        self._pending: list[InDoubtEntry] = []
        self._lock = asyncio.Lock()
        self._writing: asyncio.Task[None] | None = None

    def note(self, entry: InDoubtEntry) -> None:
        """Count `entry` now and write it soon (with any that waited for Redis), in a task
        of its own: the committer calls this while its caller may be cancelled."""
        self._metrics.outcomes_in_doubt.inc()
        self._pending.append(entry)
        # Bounded like the list itself: an outage of Redis and RabbitMQ together keeps
        # the newest.
        del self._pending[:-IN_DOUBT_MAX]
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self.flush())

    async def flush(self) -> None:
        """Write what waits; kept for the next try while Redis does not answer."""
        async with self._lock:
            while self._pending:  # with those noted while a write was under way
                batch = list(self._pending)
                try:
                    await self._store.note_in_doubt(batch)
                except StoreUnavailable:
                    return
                del self._pending[: len(batch)]
