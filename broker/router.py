"""The router: consume ingress and every agent's lane -> decide (broker/pipeline.py) ->
publish and ack in one commit -> record the outcome.

Every ingress message ends in exactly one place: the recipient's queue, the blocked
stream or the escalation queue. The ingress message is acked in the same transaction
that publishes its outcome. When Redis is down the router stops consuming and requeues
what it holds, so nothing is delivered unscored and nothing is blocked because of the
outage.

The AMQP side runs in sessions: one connection (to whichever cluster node answers) with
one consuming channel. A session ends when its connection or channel closes, when a
commit misses its deadline, or when the watchdog finds the process was paused; its
uncommitted messages then go back to the broker with the channel, and the next session
starts on the next node that answers. Nothing ever waits on RabbitMQ without a deadline.

Ingress is one queue per provisioned agent (trust.lane.<DID>) plus the shared
trust.ingress for other logins. Each is consumed with its own prefetch (RabbitMQ's
per-consumer QoS), so a flooding sender has at most `lane_prefetch` messages in the
router at a time, queued no further ahead of anyone else's; the rest of its flood waits
in its own lane, whose bound pushes back on its publishes. Lanes are found in Redis (the
set provisioning adds to), polled every second, so agents provisioned after the router
started are consumed and a restarted router consumes them all again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import random
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelNotFoundEntity

from broker.clock import wall_clock_ms
from broker.committer import CommitFailed, Outbound, TransactionalCommitter
from broker.config import BrokerConfig, split_urls, with_vhost
from broker.decision import Action
from broker.envelope import DecodedEnvelope, Envelope, decode_envelope
from broker.errors import ConfigError, EnvelopeError, StoreUnavailable
from broker.failover import ATTEMPT_ERRORS, connect_any, with_heartbeat
from broker.identity import AgentKey
from broker.indoubt import HeldBack, InDoubt, Verdict, holder_token
from broker.metrics import RouterMetrics, poll_health
from broker.negotiation import NegotiationService
from broker.pipeline import (
    Decided,
    Outcome,
    decide_envelope,
    finish_of,
    new_trace_id,
    records,
    reserve_payment,
)
from broker.policy import Policy
from broker.scoring import reject_undecodable
from broker.store.redis import Claimed, Finish, RedisStore, wait_until_available
from broker.topology import declare_session_lease, open_router_topology

__all__ = ["Outcome", "Router", "outcome_record", "record_headers", "reserve_payment",
           "trust_headers"]  # fmt: skip

log = logging.getLogger("broker.router")
_WATCHDOG_TICK_S = 0.5
_LANE_POLL_S = 1.0


class Sweeper(Protocol):
    """Upkeep that runs beside the router until `stop` is set, on the router's clock
    (broker.workflow.run_sweeper). Passed in by whoever assembles the router: workflow
    builds on this module, so the router cannot import it."""

    def __call__(
        self, config: BrokerConfig, store: RedisStore, stop: asyncio.Event, *,
        clock: Callable[[], int],
    ) -> Coroutine[Any, Any, None]: ...  # fmt: skip


@dataclass
class _Session:
    """One connection and its consuming channel; replaced whole when anything fails."""

    connection: AbstractConnection
    channel: AbstractChannel
    queue: AbstractQueue
    committer: TransactionalCommitter
    ended: asyncio.Event
    # '<session>@<host:port>': what this session's claims record as their holder.
    holder: str = ""
    replies: AbstractConnection | None = None
    why: str = ""
    # What this session consumes: queue name -> (queue, consumer tag).
    consumers: dict[str, tuple[AbstractQueue, str]] = field(default_factory=dict)
    # For passive checks of lanes: a missing queue closes the channel it was asked on.
    probe: AbstractChannel | None = None
    # Declaring the lease (broker/indoubt.py) on a channel of its own.
    lease: asyncio.Task[None] | None = None


class Router:
    """One router process; several can consume the same ingress queue side by side."""

    def __init__(
        self,
        config: BrokerConfig,
        store: RedisStore,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        broker_key: AgentKey | None = None,
        sweeper: Sweeper | None = None,
    ) -> None:
        self._config = config
        self._sweeper = sweeper
        self._broker_key = broker_key
        self._store = store
        self._clock = clock
        self.policy = Policy()
        self._session: _Session | None = None
        self._negotiation: NegotiationService | None = None
        # Consuming starts, stops and grows (new lanes) one step at a time.
        self._consuming = asyncio.Lock()
        self._lanes_missing: set[str] = set()
        self._paused = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unfinished: list[tuple[Envelope, str, Finish, int]] = []
        # Envelope ids being decided or committed here (and committed, not yet finished):
        # a redelivered copy of one of them is the same message, not a second to route.
        self._held: Counter[str] = Counter()
        # Claims this router handed back to the broker without an outcome (a store
        # outage): released in Redis once it answers, so another router may route them.
        self._release: list[tuple[Envelope, str, str]] = []
        self._indoubt = InDoubt(
            config.amqp_vhost_urls,
            session_prefix=config.topology.session_queue_prefix,
            own_connection=lambda: None if self._session is None else self._session.connection,
        )
        # Routers start on different nodes, so one node's death is not every router's.
        self._next_node = random.randrange(1 << 16)
        self._last_tick: float | None = None
        self.sessions = 0
        self.stalls = 0
        self.counts: dict[str, int] = {"deliver": 0, "block": 0, "escalate": 0, "duplicate": 0}
        self.metrics = RouterMetrics()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, declare the topology, load the policy and start consuming."""
        self.policy = await self._store.load_policy()
        if self._broker_key is not None:
            self._negotiation = NegotiationService(
                self._config, self._store, self._broker_key, self._clock, metrics=self.metrics
            )
        # The first session must open here: a router that cannot reach any node says so.
        try:
            await self._open_session()
        except ChannelNotFoundEntity as exc:
            raise ConfigError(
                f"vhost {self._config.vhost!r} lacks the broker's topology ({exc}); run "
                "`trust-broker setup` once with the admin login (routers declare nothing)"
            ) from None
        self._spawn(self._keep_sessions())
        self._spawn(self._watchdog())
        self._spawn(self._follow_invalidations())
        self._spawn(self._follow_lanes())
        self._spawn(
            poll_health(
                self.metrics, self._config, self._store.ping,
                lambda: self._store.cache_stats, self._stopping,
            )
        )  # fmt: skip
        if self._sweeper is not None:
            self._spawn(self._sweeper(self._config, self._store, self._stopping, clock=self._clock))
        log.info("router started: %r, policy version %d", self._config, self.policy.version)

    async def stop(self) -> None:
        """Stop consuming, let in-flight messages finish, then close."""
        self._stopping.set()
        await self._cancel_consumer()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._close_session(self._session)
        log.info("router stopped: %s", self.counts)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _deadline(self) -> float:
        return self._config.amqp_timeout_ms / 1000

    async def _open_session(self) -> None:
        """Connect to the next node that answers and start consuming there."""
        config = self._config
        urls = [with_heartbeat(url, config.heartbeat_s) for url in config.amqp_vhost_urls]
        connection = await connect_any(urls, timeout=self._deadline(), first=self._next_node)
        try:
            session = await asyncio.wait_for(self._prepare(connection), self._deadline())
        except BaseException:
            await _close_quietly(connection, self._deadline())
            raise
        self._session = session
        self.sessions += 1
        if not self._paused.is_set() and not self._stopping.is_set():
            await self._consume()

    async def _prepare(self, connection: AbstractConnection) -> _Session:
        ended = asyncio.Event()
        connection.close_callbacks.add(lambda *_: ended.set())
        # Transactions, not publisher confirms: see broker/committer.py for why.
        channel = await connection.channel(publisher_confirms=False)
        channel.close_callbacks.add(lambda *_: ended.set())
        queue = await open_router_topology(channel, self._config.topology)
        replies = None
        if self._negotiation is not None:
            # Replies need the default exchange, which the router's own login may not
            # write to: they go over a second login that can do nothing else.
            replies = await self._reply_connection(connection)
            replies.close_callbacks.add(lambda *_: ended.set())
            await self._negotiation.start(replies)
        lease = uuid.uuid4().hex
        token = holder_token(lease, connection)
        holder: list[_Session] = []

        def broken(why: str) -> None:
            if holder:
                _end(holder[0], why)

        committer = TransactionalCommitter(
            channel,
            timeout_s=self._config.commit_timeout_ms / 1000,
            on_broken=broken,
            awake=self._awake,
        )
        session = _Session(connection, channel, queue, committer, ended, token, replies)
        # The session's lease: while its connection lives on its node, a retry of what it
        # claimed waits (broker/indoubt.py). Declaring a queue writes to every node's
        # Mnesia and so waits for a frozen one; the session does not wait for it.
        session.lease = asyncio.create_task(self._take_lease(connection, lease))
        holder.append(session)
        return session

    async def _take_lease(self, connection: AbstractConnection, lease: str) -> None:
        try:
            channel = await asyncio.wait_for(
                connection.channel(publisher_confirms=False), self._deadline()
            )
            await declare_session_lease(channel, self._config.topology, lease)
        except (AMQPError, RuntimeError, TimeoutError, ConnectionError) as exc:
            log.warning("session lease not declared (%s)", type(exc).__name__)

    async def _reply_connection(self, connection: AbstractConnection) -> AbstractConnection:
        if not self._config.reply_amqp_url:
            return connection
        urls = [
            with_heartbeat(with_vhost(url, self._config.vhost), self._config.heartbeat_s)
            for url in split_urls(self._config.reply_amqp_url)
        ]
        return await connect_any(urls, timeout=self._deadline(), first=self._next_node)

    async def _keep_sessions(self) -> None:
        """Whenever the session ends, give back what it held and open the next one."""
        while not self._stopping.is_set():
            session = self._session
            if session is not None:
                await session.ended.wait()
                if self._stopping.is_set():
                    return
                log.warning("AMQP session ended (%s): reconnecting", session.why or "closed")
                await self._close_session(session)
                self._session = None
                self._next_node += 1
            try:
                await self._open_session()
            except (*ATTEMPT_ERRORS, RuntimeError) as exc:
                log.warning("no RabbitMQ node usable yet (%s); retrying", exc)
                self._next_node += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)

    async def _close_session(self, session: _Session) -> None:
        # Closing the channel makes the broker requeue everything delivered on it that was
        # not committed; an open transaction is rolled back with it.
        stopping = self._stopping.is_set()
        session.committer.break_off(session.why or "router stopping", expected=stopping)
        if session.lease is not None:
            session.lease.cancel()
        await _close_quietly(session.connection, self._deadline())
        if session.replies is not None and session.replies is not session.connection:
            await _close_quietly(session.replies, self._deadline())

    def _awake(self) -> bool:
        """False when the watchdog has not run for longer than stall_ms (a pause)."""
        if self._last_tick is None:
            return True
        late = asyncio.get_running_loop().time() - self._last_tick
        return late <= self._config.stall_ms / 1000 + _WATCHDOG_TICK_S

    async def _watchdog(self, tick_s: float = _WATCHDOG_TICK_S) -> None:
        """Notice that this process stood still (SIGSTOP, a frozen VM, a blocked loop):
        whatever it decided before the pause may be stale and another router may have
        taken over its messages, so it commits none of it and drops the session."""
        stall_s = self._config.stall_ms / 1000
        loop = asyncio.get_running_loop()
        last = self._last_tick = loop.time()
        while not self._stopping.is_set():
            await asyncio.sleep(tick_s)
            now = self._last_tick = loop.time()
            if now - last > stall_s + tick_s and self._session is not None:
                self.stalls += 1
                log.warning("router stood still for %.1fs: giving back its messages", now - last)
                _end(self._session, f"process paused for {now - last:.1f}s")
            last = now

    async def _consume(self) -> None:
        """Consume the shared ingress (prefetch `prefetch`) and every known lane (each
        `lane_prefetch`: basic.qos applies to the consumers started after it)."""
        session = self._session
        if session is None:
            return
        async with self._consuming:
            if session.consumers:
                return
            channel, deadline = session.channel, self._deadline()
            await asyncio.wait_for(channel.set_qos(prefetch_count=self._config.prefetch), deadline)
            tag = await asyncio.wait_for(session.queue.consume(self._on_message), deadline)
            session.consumers[session.queue.name] = (session.queue, tag)
            await asyncio.wait_for(
                channel.set_qos(prefetch_count=self._config.lane_prefetch), deadline
            )
        await self._consume_new_lanes()

    async def _consume_new_lanes(self) -> None:
        """Start consuming the lanes in Redis that this session does not consume yet."""
        session = self._session
        if session is None or not session.consumers:
            return
        try:
            dids = await self._store.lanes()
        except StoreUnavailable:
            return
        topology = self._config.topology
        async with self._consuming:
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
                tag = await asyncio.wait_for(queue.consume(self._on_message), self._deadline())
                session.consumers[name] = (queue, tag)
                self.metrics.lanes.set(len(session.consumers) - 1)

    async def _lane_queue(self, session: _Session, name: str) -> AbstractQueue | None:
        """The lane on the consuming channel, once a probe channel found it exists (asked
        on the consuming channel, a missing queue would close it and end the session)."""
        try:
            if session.probe is None or session.probe.is_closed:
                session.probe = await asyncio.wait_for(
                    session.connection.channel(publisher_confirms=False), self._deadline()
                )
            await asyncio.wait_for(session.probe.get_queue(name, ensure=True), self._deadline())
        except ChannelNotFoundEntity:
            session.probe = None
            if name not in self._lanes_missing:
                self._lanes_missing.add(name)
                log.warning("lane %s is in Redis but not in RabbitMQ: not consumed", name)
            return None
        self._lanes_missing.discard(name)
        return await session.channel.get_queue(name, ensure=False)

    async def _follow_lanes(self) -> None:
        """Consume the lanes of agents provisioned since, every second, forever (besides
        at once on provisioning's announcement, which a Redis reconnection may miss)."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _LANE_POLL_S)
                return
            await self._discover_lanes()

    async def _discover_lanes(self) -> None:
        if self._paused.is_set() or self._stopping.is_set():
            return
        try:
            await self._consume_new_lanes()
        except (AMQPError, RuntimeError, TimeoutError, ConnectionError) as exc:
            # The session is failing; the next one consumes every lane again.
            log.warning("could not consume a new lane (%s)", type(exc).__name__)
            if self._session is not None:
                _end(self._session, "consuming a lane failed")

    async def _cancel_consumer(self) -> None:
        session = self._session
        if session is None:
            return
        async with self._consuming:
            consumers = list(session.consumers.values())
            session.consumers.clear()
            self.metrics.lanes.set(0)
            if not consumers or session.ended.is_set():
                # An ended session's channel is being closed, and its consumers with it; a
                # cancel on its dying connection can hang for the full deadline each.
                return
            cancels = [queue.cancel(tag) for queue, tag in consumers]
            with contextlib.suppress(AMQPError, RuntimeError, TimeoutError, ConnectionError):
                # One deadline for all: with many lanes, one at a time would add up.
                await asyncio.wait_for(
                    asyncio.gather(*cancels, return_exceptions=True), self._deadline()
                )

    # -- store outage -------------------------------------------------------------------

    async def _pause_for_store(self) -> None:
        """Stop taking messages until Redis answers again, then resume by ourselves."""
        if self._paused.is_set():
            return
        self._paused.set()
        self.metrics.paused.set(1)
        log.warning("peer-state store unavailable: pausing consumption (fail closed)")
        # Resuming must not wait for the cancels (it takes the consuming lock after them).
        self._spawn(self._resume_when_store_returns())
        await self._cancel_consumer()

    async def _resume_when_store_returns(self) -> None:
        if not await wait_until_available(self._store, self._config.store_retry_ms, self._stopping):
            return
        await self._flush_unfinished()
        self._paused.clear()
        self.metrics.paused.set(0)
        if not self._stopping.is_set():
            try:
                await self._consume()
            except (AMQPError, RuntimeError, TimeoutError, ConnectionError):
                # The session is failing too; the next one consumes once it opens.
                if self._session is not None:
                    _end(self._session, "consume failed after the store came back")
            log.warning("peer-state store is back: consumption resumed")

    async def _flush_unfinished(self) -> None:
        pending, self._unfinished = self._unfinished, []
        for env, digest, result, now_ms in pending:
            try:
                await self._store.finish(env, digest, result, self.policy, now_ms)
            except StoreUnavailable:
                self._unfinished.append((env, digest, result, now_ms))
                continue
            self._unhold(env.id)
        released, self._release = self._release, []
        for env, digest, holder in released:
            try:
                # Only if this session still holds it: another may have taken it since.
                await self._store.hand_over(env, digest, holder, "")
            except StoreUnavailable:
                self._release.append((env, digest, holder))

    def _unhold(self, message_id: str) -> None:
        self._held[message_id] -= 1
        if self._held[message_id] <= 0:
            del self._held[message_id]

    async def _follow_invalidations(self) -> None:
        """Apply cache invalidations and policy changes from Redis pub/sub, forever."""
        while not self._stopping.is_set():
            try:
                async for what in self._store.invalidations():
                    if what in ("policy", "all"):
                        await self._reload_policy()
                    elif what.startswith("lane:"):
                        self._spawn(self._discover_lanes())
            except StoreUnavailable:
                await asyncio.sleep(self._config.store_retry_ms / 1000)

    async def _reload_policy(self) -> None:
        policy = await self._store.load_policy()
        if policy.version != self.policy.version:
            log.info("policy version %d -> %d", self.policy.version, policy.version)
        self.policy = policy

    # -- one message --------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._paused.is_set():
            await self._requeue(message)
            return
        try:
            await self.handle(message)
        except HeldBack:
            self.metrics.in_doubt.labels("held_back").inc()
            await self._requeue(message)
        except StoreUnavailable:
            await self._requeue(message)
            await self._pause_for_store()
        except (TimeoutError, AMQPError, ConnectionError, ChannelInvalidStateError) as exc:
            # Not committed (CommitFailed among them), so not published and no outcome
            # recorded: the broker redelivers the message (redelivered=True) with the
            # channel it came on, and the retry routes it once.
            log.warning("outcome not committed for an ingress message: %s", type(exc).__name__)
        except Exception:
            # A bug must not stall the queue or lose the message: keep it on the blocked
            # stream for review, then ack.
            log.exception("internal error while routing a message; recording it as blocked")
            await self._block_internal_error(message)

    async def _requeue(self, message: AbstractIncomingMessage) -> None:
        with contextlib.suppress(AMQPError, RuntimeError, ConnectionError, TimeoutError):
            await self._committer_or_fail().requeue(message)

    def _committer_or_fail(self) -> TransactionalCommitter:
        if self._session is None:
            raise CommitFailed("no AMQP session: the message comes back")
        return self._session.committer

    async def _block_internal_error(self, message: AbstractIncomingMessage) -> None:
        policy = self.policy
        error = EnvelopeError("internal error while routing", code="internal_error")
        outcome = Outcome(reject_undecodable(error, policy), new_trace_id(), self._clock(), None)
        with contextlib.suppress(AMQPError, RuntimeError, ConnectionError, TimeoutError):
            await self._commit(message, outcome)

    async def _commit(
        self, message: AbstractIncomingMessage, outcome: Outcome, *, record: bool = True
    ) -> None:
        """Publish the outcome and ack the ingress message in one transaction; with
        `record`, also write the decision log and trace (paths without a finish step)."""

        await self._committer_or_fail().commit(message, self._outbound(message.body, outcome))
        action = outcome.decision.action.value
        self.counts[action] += 1
        self.metrics.observe(outcome.decision, (self._clock() - outcome.received_ms) / 1000)
        self._log(outcome)
        if record:
            entry, trace = records(outcome, len(message.body), self._clock())
            env = outcome.envelope
            with contextlib.suppress(StoreUnavailable):
                # Attack traffic (forged, replayed, garbage) is recorded best-effort.
                await self._store.record_decision(
                    entry, trace, outcome.trace_id, env.id if env else None
                )

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Decide one ingress message, then publish its outcome and ack it atomically."""
        received_ms = self._clock()
        policy = self.policy
        try:
            decoded = decode_envelope(message.body, policy.gates.max_envelope_bytes)
        except EnvelopeError as exc:
            decision = reject_undecodable(exc, policy)
            await self._commit(
                message, Outcome(decision, new_trace_id(), received_ms, None, exc.field)
            )
            return
        await self._handle_envelope(message, decoded, policy, received_ms)

    async def _handle_envelope(
        self,
        message: AbstractIncomingMessage,
        decoded: DecodedEnvelope,
        policy: Policy,
        received_ms: int,
    ) -> None:
        env = decoded.envelope
        self._held[env.id] += 1
        try:
            decided = await self._decide(message, decoded, policy, received_ms)
            if decided is None:
                self.counts["duplicate"] += 1
                await self._committer_or_fail().commit(message, None)
                return
            await self._commit(message, decided.outcome, record=not decided.finishes)
            if decided.finishes:
                await self._record_finish(decided, len(message.body))
        finally:
            self._unhold(env.id)

    async def _decide(
        self,
        message: AbstractIncomingMessage,
        decoded: DecodedEnvelope,
        policy: Policy,
        received_ms: int,
    ) -> Decided | None:
        session = self._session
        holder = session.holder if session is not None else ""
        try:
            return await decide_envelope(
                self._store, decoded, message.body, policy, received_ms,
                redelivered=bool(message.redelivered), holder=holder, settle=self._settle_retry,
            )  # fmt: skip
        except StoreUnavailable:
            # It goes back to the broker with no outcome; if it was claimed here, the claim
            # is released once Redis answers (others wait for this session meanwhile).
            digest = hashlib.sha256(message.body).hexdigest()
            self._release.append((decoded.envelope, digest, holder))
            raise

    async def _settle_retry(self, env: Envelope, digest: str, claimed: Claimed) -> bool:
        """May this retry be routed? Only once its holder can commit nothing more, and not
        at all once its holder committed it (broker/indoubt.py); meanwhile it is kept back
        here for up to in_doubt_hold_ms, then returned to its queue (HeldBack)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._config.in_doubt_hold_ms / 1000
        holder = claimed.holder
        while True:
            session = self._session
            if session is not None and holder == session.holder:
                # Claimed by this very session: handed back by it (a store outage), or a
                # second copy of a message still in flight here.
                return self._held[env.id] <= 1
            verdict = await self._verdict(holder, env.id, claimed.first_ms)
            if verdict is Verdict.WAIT:
                if loop.time() >= give_up:
                    raise HeldBack(f"{env.id}: its holder may still commit it")
                await asyncio.sleep(0.5)
                result = await self._store.hand_over(env, digest, holder, holder)
            else:
                me = session.holder if session is not None else ""
                result = await self._store.hand_over(env, digest, holder, me)
                self.metrics.in_doubt.labels(verdict.value).inc()
            if result == "done":
                return False
            if result.startswith("held|"):
                holder = result.partition("|")[2]
            elif verdict is not Verdict.WAIT or result in ("gone", "replay"):
                return True

    async def _verdict(self, holder: str, message_id: str, first_ms: int | None) -> Verdict:
        if not holder:
            return Verdict.ROUTE  # claimed before claims named their holder, or released
        if first_ms is not None and self._clock() - first_ms > self._config.in_doubt_max_ms:
            log.warning("routing %s: its holder %s has held it too long", message_id, holder)
            return Verdict.ROUTE
        return await self._indoubt.settle(holder)

    async def _record_finish(self, decided: Decided, size: int) -> None:
        env, now_ms = decided.outcome.envelope, decided.outcome.received_ms
        assert env is not None
        result = finish_of(decided, size, self._clock())
        try:
            anomaly = await self._store.finish(env, decided.digest, result, self.policy, now_ms)
        except StoreUnavailable:
            # The outcome is committed already; the record is written once Redis returns
            # (and until then a redelivered copy here is one in flight).
            self._unfinished.append((env, decided.digest, result, now_ms))
            self._held[env.id] += 1
            await self._pause_for_store()
            return
        if anomaly:
            log.warning("anomaly (%s): %s is under observation", anomaly, env.sender)

    # -- publishing ---------------------------------------------------------------------

    def _outbound(self, raw: bytes, outcome: Outcome) -> Outbound:
        """The message that carries the outcome, to publish inside the commit."""
        if outcome.decision.action is Action.DELIVER:
            return self._delivery(raw, outcome)
        return self._record(raw, outcome)

    def _delivery(self, raw: bytes, outcome: Outcome) -> Outbound:
        assert outcome.envelope is not None
        env = outcome.envelope
        message = aio_pika.Message(
            outcome.wire or raw,  # exactly what was verified, in its RFC 8785 form
            headers=trust_headers(outcome),
            message_id=env.id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        # No queue bound for the recipient: trust.deliver's alternate exchange puts the
        # message on the blocked stream (reported there as `undeliverable`).
        return Outbound(self._config.topology.deliver_exchange, env.recipient, message)

    def _record(self, raw: bytes, outcome: Outcome) -> Outbound:
        """A block or escalation record (the original bytes kept verbatim)."""
        topology = self._config.topology
        action = outcome.decision.action
        exchange = (
            topology.escalations_exchange
            if action is Action.ESCALATE
            else topology.blocked_exchange
        )
        record = outcome_record(raw, outcome)
        headers = record_headers(outcome)
        message = aio_pika.Message(
            orjson.dumps(record),
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=outcome.trace_id,
        )
        return Outbound(exchange, "", message)

    def _log(self, outcome: Outcome) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        env, decision = outcome.envelope, outcome.decision
        log.debug(
            "%s",
            orjson.dumps(
                {
                    "event": "decision",
                    "trace_id": outcome.trace_id,
                    "message_id": env.id if env else None,
                    "sender": env.sender if env else None,
                    "recipient": env.recipient if env else None,
                    "kind": env.kind if env else None,
                    "action": decision.action.value,
                    "tier": decision.tier.value,
                    "composite": decision.composite,
                    "reasons": decision.reasons,
                    "policy_version": decision.policy_version,
                }
            ).decode(),
        )


def trust_headers(outcome: Outcome) -> dict[str, Any]:
    """AMQP headers that tell a recipient (or reviewer) why the message went where it did."""
    decision = outcome.decision
    return {
        "x-trust-action": decision.action.value,
        "x-trust-score": "" if decision.composite is None else f"{decision.composite:.4f}",
        "x-trust-tier": decision.tier.value,
        "x-trust-dimensions": orjson.dumps(decision.dimensions).decode(),
        "x-trust-reasons": ",".join(decision.reasons),
        "x-trust-policy-version": decision.policy_version,
        "x-trust-trace-id": outcome.trace_id,
        # What holds the sender back, and what it could do: recipients pass it on.
        "x-trust-weakest": decision.weakest or "",
        "x-trust-remediation": decision.remediation,
    }


def record_headers(outcome: Outcome) -> dict[str, Any]:
    """Headers of a blocked or escalation record: the trust headers plus who and whom."""
    headers = trust_headers(outcome)
    if outcome.envelope is not None:
        headers["x-trust-sender"] = outcome.envelope.sender
        headers["x-trust-recipient"] = outcome.envelope.recipient
    return headers


def outcome_record(raw: bytes, outcome: Outcome) -> dict[str, Any]:
    """The JSON record written to the blocked stream or the escalation queue."""
    env = outcome.envelope
    return {
        "trace_id": outcome.trace_id,
        "received_ms": outcome.received_ms,
        "message_id": env.id if env else None,
        "sender": env.sender if env else None,
        "recipient": env.recipient if env else None,
        "kind": env.kind if env else None,
        "reason": outcome.decision.reasons[0],
        "error_field": outcome.error_field or None,
        "decision": outcome.decision.to_dict(),
        "raw_b64": base64.b64encode(raw).decode("ascii"),
    }


def _end(session: _Session, why: str) -> None:
    """Mark a session over; the session keeper closes it and opens the next."""
    if not session.why:
        session.why = why
    session.ended.set()


async def _close_quietly(connection: AbstractConnection, deadline_s: float) -> None:
    # A frozen node never answers Connection.Close: past the deadline the socket is
    # simply dropped (cancelling the close tears down aiormq's reader and writer).
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), deadline_s)
