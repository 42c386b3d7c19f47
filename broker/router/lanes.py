"""What a router session consumes: the shared trust.ingress and every agent's lane.

Ingress is one queue per provisioned agent (trust.lane.<DID>) plus the shared
trust.ingress for other logins. Each is consumed with its own prefetch (RabbitMQ's
per-consumer QoS), so a flooding sender has at most `lane_prefetch` messages in the
router at a time, queued no further ahead of anyone else's; the rest of its flood waits
in its own lane, whose bound pushes back on its publishes. Lanes are found in Redis (the
set provisioning adds to), so agents provisioned after the router started are consumed
and a restarted router consumes them all again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from broker.amqp.errors import AMQP_ERRORS, ChannelNotFoundEntity
from broker.config import BrokerConfig
from broker.errors import StoreUnavailable
from broker.router.metrics import RouterMetrics
from broker.router.sessions import Session, deadline_s
from broker.store.redis import RedisStore

log = logging.getLogger("broker.router")
OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Consumers:
    """Starts, grows (new lanes) and cancels a session's consumers, one step at a time."""

    def __init__(
        self,
        config: BrokerConfig,
        store: RedisStore,
        metrics: RouterMetrics,
        on_message: OnMessage,
        paused: asyncio.Event,
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._on_message = on_message
        self._paused = paused
        self._lock = asyncio.Lock()
        self._missing: set[str] = set()

    async def start(self, session: Session) -> None:
        """Consume the shared ingress (prefetch `prefetch`) and every known lane (each
        `lane_prefetch`: basic.qos applies to the consumers started after it)."""
        async with self._lock:
            if session.consumers:
                return
            channel, deadline = session.channel, deadline_s(self._config)
            await asyncio.wait_for(channel.set_qos(prefetch_count=self._config.prefetch), deadline)
            tag = await asyncio.wait_for(session.queue.consume(self._on_message), deadline)
            session.consumers[session.queue.name] = (session.queue, tag)
            await asyncio.wait_for(
                channel.set_qos(prefetch_count=self._config.lane_prefetch), deadline
            )
        await self.add_new_lanes(session)

    async def add_new_lanes(self, session: Session) -> None:
        """Start consuming the lanes in Redis that this session does not consume yet."""
        if not session.consumers:
            return
        try:
            dids = await self._store.lanes()
        except StoreUnavailable:
            return
        topology = self._config.topology
        async with self._lock:
            for did in sorted(dids):
                name = topology.lane_queue(did)
                if name in session.consumers:
                    continue
                # Paused or ending meanwhile: consumers were cancelled, start none.
                if not session.consumers or self._paused.is_set() or session.ended.is_set():
                    return
                queue = await self._lane_queue(session, name)
                if queue is None:
                    continue
                tag = await asyncio.wait_for(
                    queue.consume(self._on_message), deadline_s(self._config)
                )
                session.consumers[name] = (queue, tag)
                self._metrics.lanes.set(len(session.consumers) - 1)

    async def _lane_queue(self, session: Session, name: str) -> AbstractQueue | None:
        """The lane on the consuming channel, once a probe channel found it exists (asked
        on the consuming channel, a missing queue would close it and end the session)."""
        deadline = deadline_s(self._config)
        try:
            if session.probe is None or session.probe.is_closed:
                session.probe = await asyncio.wait_for(
                    session.connection.channel(publisher_confirms=False), deadline
                )
            await asyncio.wait_for(session.probe.get_queue(name, ensure=True), deadline)
        except ChannelNotFoundEntity:
            session.probe = None
            if name not in self._missing:
                self._missing.add(name)
                log.warning("lane %s is in Redis but not in RabbitMQ: not consumed", name)
            return None
        self._missing.discard(name)
        return await session.channel.get_queue(name, ensure=False)

    async def cancel(self, session: Session) -> None:
        """Stop every consumer of the session (within one deadline for all of them)."""
        async with self._lock:
            consumers = list(session.consumers.values())
            session.consumers.clear()
            self._metrics.lanes.set(0)
            if not consumers or session.ended.is_set():
                # An ended session's channel is being closed, and its consumers with it; a
                # cancel on its dying connection can hang for the full deadline each.
                return
            cancels = [queue.cancel(tag) for queue, tag in consumers]
            with contextlib.suppress(*AMQP_ERRORS):
                # One deadline for all: with many lanes, one at a time would add up.
                await asyncio.wait_for(
                    asyncio.gather(*cancels, return_exceptions=True), deadline_s(self._config)
                )
