"""The router: consume ingress and every agent's lane -> decide (broker/router/pipeline.py) ->
publish and ack in one commit -> record the outcome.

Every ingress message ends in exactly one place: the recipient's queue, the blocked
stream or the escalation queue. The ingress message is acked in the same transaction
that publishes its outcome. When Redis is down the router stops consuming and requeues
what it holds, so nothing is delivered unscored and nothing is blocked because of the
outage. Sessions (one connection, one consuming channel) are broker/router/sessions.py;
what they consume, broker/router/lanes.py; whether a redelivered message may be routed,
broker/router/retries.py; what is published for an outcome, broker/router/outbound.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from aio_pika.abc import AbstractIncomingMessage

from broker.amqp.committer import CommitFailed, TransactionalCommitter
from broker.amqp.errors import AMQP_ERRORS, CHANNEL_ERRORS, ChannelNotFoundEntity
from broker.amqp.indoubt import HeldBack, InDoubt
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.envelope import DecodedEnvelope, Envelope, decode_envelope
from broker.core.identity import AgentKey
from broker.core.policy import Policy
from broker.core.scoring import reject_undecodable
from broker.errors import ConfigError, EnvelopeError, StoreUnavailable
from broker.reasons import Reason
from broker.router.doubts import InDoubtLog, in_doubt_entry
from broker.router.lanes import Consumers
from broker.router.metrics import RouterMetrics, poll_health
from broker.router.negotiation import NegotiationService
from broker.router.outbound import log_decision, outbound
from broker.router.pipeline import (
    Decided,
    Outcome,
    decide_envelope,
    finish_of,
    new_trace_id,
    records,
)
from broker.router.retries import Retries
from broker.router.sessions import Session, close_session, deadline_s, end, open_session
from broker.router.watchdog import Watchdog
from broker.store.claims import Finish
from broker.store.redis import RedisStore, wait_until_available

log = logging.getLogger("broker.router")
_LANE_POLL_S = 1.0


class Sweeper(Protocol):
    """Upkeep that runs beside the router until `stop` is set, on the router's clock
    (broker.ops.sweeper.run_sweeper). Passed in by whoever assembles the router: ops
    builds on this package, so the router cannot import it."""

    def __call__(
        self, config: BrokerConfig, store: RedisStore, stop: asyncio.Event, *,
        clock: Callable[[], int],
    ) -> Coroutine[Any, Any, None]: ...  # fmt: skip


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
        self._session: Session | None = None
        self._negotiation: NegotiationService | None = None
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
        self.metrics = RouterMetrics()
        self._in_doubt = InDoubtLog(store, self.metrics)
        self._consumers = Consumers(config, store, self.metrics, self._on_message, self._paused)
        self._retries = Retries(
            config, store, self._indoubt, self.metrics, clock,
            session=lambda: self._session, held=self._held,
        )  # fmt: skip
        # Routers start on different nodes, so one node's death is not every router's.
        self._next_node = random.randrange(1 << 16)
        self._watchdog = Watchdog(config.stall_ms)
        self.sessions = 0
        self.stalls = 0
        self.counts: dict[str, int] = {"deliver": 0, "block": 0, "escalate": 0, "duplicate": 0}

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
        self._spawn(self._watchdog.run(self._stopping, self._stalled))
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
        if self._session is not None:
            await self._consumers.cancel(self._session)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._close_session(self._session)
        await self._in_doubt.flush()  # what the last commits left in doubt, if Redis answers
        log.info("router stopped: %s", self.counts)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_session(self) -> None:
        """Connect to the next node that answers and start consuming there."""
        self._session = await open_session(
            self._config, negotiation=self._negotiation, awake=self._watchdog.awake,
            first=self._next_node,
        )  # fmt: skip
        self.sessions += 1
        if not self._paused.is_set() and not self._stopping.is_set():
            await self._consume()

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
            except AMQP_ERRORS as exc:
                log.warning("no RabbitMQ node usable yet (%s); retrying", exc)
                self._next_node += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)

    async def _close_session(self, session: Session) -> None:
        await close_session(session, deadline_s(self._config), stopping=self._stopping.is_set())

    def _stalled(self, seconds: float) -> None:
        """The process stood still (broker/router/watchdog.py): give back its messages."""
        if self._session is not None:
            self.stalls += 1
            log.warning("router stood still for %.1fs: giving back its messages", seconds)
            end(self._session, f"process paused for {seconds:.1f}s")

    async def _consume(self) -> None:
        if self._session is not None:
            await self._consumers.start(self._session)

    async def _follow_lanes(self) -> None:
        """Consume the lanes of agents provisioned since, every second, forever (besides
        at once on provisioning's announcement, which a Redis reconnection may miss)."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _LANE_POLL_S)
                return
            await self._discover_lanes()

    async def _discover_lanes(self) -> None:
        session = self._session
        if session is None or self._paused.is_set() or self._stopping.is_set():
            return
        try:
            await self._consumers.add_new_lanes(session)
        except AMQP_ERRORS as exc:
            # The session is failing; the next one consumes every lane again.
            log.warning("could not consume a new lane (%s)", type(exc).__name__)
            end(session, "consuming a lane failed")

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
        if self._session is not None:
            await self._consumers.cancel(self._session)

    async def _resume_when_store_returns(self) -> None:
        if not await wait_until_available(self._store, self._config.store_retry_ms, self._stopping):
            return
        await self._flush_unfinished()
        self._paused.clear()
        self.metrics.paused.set(0)
        if not self._stopping.is_set():
            try:
                await self._consume()
            except AMQP_ERRORS:
                # The session is failing too; the next one consumes once it opens.
                if self._session is not None:
                    end(self._session, "consume failed after the store came back")
            log.warning("peer-state store is back: consumption resumed")

    async def _flush_unfinished(self) -> None:
        await self._in_doubt.flush()
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
        except CHANNEL_ERRORS as exc:
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
        with contextlib.suppress(*AMQP_ERRORS):
            await self._committer_or_fail().requeue(message)

    def _committer_or_fail(self) -> TransactionalCommitter:
        if self._session is None:
            raise CommitFailed("no AMQP session: the message comes back")
        return self._session.committer

    async def _block_internal_error(self, message: AbstractIncomingMessage) -> None:
        policy = self.policy
        error = EnvelopeError("internal error while routing", code=Reason.INTERNAL_ERROR)
        outcome = Outcome(reject_undecodable(error, policy), new_trace_id(), self._clock(), None)
        with contextlib.suppress(*AMQP_ERRORS):
            await self._commit(message, outcome)

    async def _commit(
        self, message: AbstractIncomingMessage, outcome: Outcome, *, record: bool = True
    ) -> None:
        """Publish the outcome and ack the ingress message in one transaction; with
        `record`, also write the decision log and trace (paths without a finish step)."""
        published = outbound(self._config.topology, message.body, outcome)
        session = self._session  # the session sending the commit, not the next one
        if session is None:
            raise CommitFailed("no AMQP session: the message comes back")

        def in_doubt() -> None:
            doubt = in_doubt_entry(message, outcome, published, session.holder, self._clock())
            self._in_doubt.note(doubt)

        await session.committer.commit(message, published, in_doubt=in_doubt)
        action = outcome.decision.action.value
        self.counts[action] += 1
        self.metrics.observe(outcome.decision, (self._clock() - outcome.received_ms) / 1000)
        log_decision(outcome)
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
                redelivered=bool(message.redelivered), holder=holder, settle=self._retries.settle,
            )  # fmt: skip
        except StoreUnavailable:
            # It goes back to the broker with no outcome; if it was claimed here, the claim
            # is released once Redis answers (others wait for this session meanwhile).
            digest = hashlib.sha256(message.body).hexdigest()
            self._release.append((decoded.envelope, digest, holder))
            raise

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
