"""The router: consume ingress -> decide (pure core) -> publish and ack in one commit.

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
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

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
from broker.currency import to_minor
from broker.decision import Action, Decision, Tier
from broker.envelope import DecodedEnvelope, Envelope, decode_envelope, signature_valid
from broker.errors import ConfigError, EnvelopeError, StoreUnavailable
from broker.failover import ATTEMPT_ERRORS, connect_any, with_heartbeat
from broker.identity import AgentKey
from broker.metrics import RouterMetrics, poll_health
from broker.negotiation import NegotiationService
from broker.policy import Policy
from broker.recorder import DEFAULT_MONITORING, decision_entry, trace_record
from broker.reports import REFUSALS, parse_report, reporter_weight
from broker.scoring import blocked, decide, reject_undecodable, sender_composite
from broker.state import PeerState, TrustContext
from broker.store.redis import Claim, Finish, RedisStore, wait_until_available
from broker.topology import open_router_topology

log = logging.getLogger("broker.router")
_WATCHDOG_TICK_S = 0.5
# A report still counts when only the reported peer's own acceptance rules block it.
_REPORTABLE_DESPITE = (None, "unknown_recipient", "privacy_violation", "pact_violation")


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision plus what the router knows about the message it decided."""

    decision: Decision
    trace_id: str
    received_ms: int
    envelope: Envelope | None
    error_field: str = ""
    spent_minor: int = 0
    monitoring: str = DEFAULT_MONITORING


@dataclass
class _Session:
    """One connection and its consuming channel; replaced whole when anything fails."""

    connection: AbstractConnection
    channel: AbstractChannel
    queue: AbstractQueue
    committer: TransactionalCommitter
    ended: asyncio.Event
    replies: AbstractConnection | None = None
    why: str = ""


class Router:
    """One router process; several can consume the same ingress queue side by side."""

    def __init__(
        self,
        config: BrokerConfig,
        store: RedisStore,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        broker_key: AgentKey | None = None,
    ) -> None:
        self._config = config
        self._broker_key = broker_key
        self._store = store
        self._clock = clock
        self.policy = Policy()
        self._session: _Session | None = None
        self._negotiation: NegotiationService | None = None
        self._consumer_tag: str | None = None
        self._paused = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unfinished: list[tuple[Envelope, str, Finish, int]] = []
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
                self._config, self._store, self._broker_key, self._clock
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
        self._spawn(
            poll_health(
                self.metrics, self._config, self._store.ping,
                lambda: self._store.cache_stats, self._stopping,
            )
        )  # fmt: skip
        # Local import: broker.workflow imports this module (trust_headers, outcome_record).
        from broker.workflow import run_sweeper

        self._spawn(run_sweeper(self._config, self._store, self._stopping, clock=self._clock))
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
        await channel.set_qos(prefetch_count=self._config.prefetch)
        queue = await open_router_topology(channel, self._config.topology)
        replies = None
        if self._negotiation is not None:
            # Replies need the default exchange, which the router's own login may not
            # write to: they go over a second login that can do nothing else.
            replies = await self._reply_connection(connection)
            replies.close_callbacks.add(lambda *_: ended.set())
            await self._negotiation.start(replies)
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
        session = _Session(connection, channel, queue, committer, ended, replies)
        holder.append(session)
        return session

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
                self._consumer_tag = None
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
        session = self._session
        if session is None:
            return
        self._consumer_tag = await asyncio.wait_for(
            session.queue.consume(self._on_message), self._deadline()
        )

    async def _cancel_consumer(self) -> None:
        session, tag = self._session, self._consumer_tag
        if session is not None and tag is not None:
            self._consumer_tag = None
            with contextlib.suppress(AMQPError, RuntimeError, TimeoutError, ConnectionError):
                await asyncio.wait_for(session.queue.cancel(tag), self._deadline())

    # -- store outage -------------------------------------------------------------------

    async def _pause_for_store(self) -> None:
        """Stop taking messages until Redis answers again, then resume by ourselves."""
        if self._paused.is_set():
            return
        self._paused.set()
        self.metrics.paused.set(1)
        log.warning("peer-state store unavailable: pausing consumption (fail closed)")
        await self._cancel_consumer()
        self._spawn(self._resume_when_store_returns())

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

    async def _follow_invalidations(self) -> None:
        """Apply cache invalidations and policy changes from Redis pub/sub, forever."""
        while not self._stopping.is_set():
            try:
                async for what in self._store.invalidations():
                    if what in ("policy", "all"):
                        await self._reload_policy()
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
        outcome = Outcome(reject_undecodable(error, policy), _trace_id(), self._clock(), None)
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
            entry, trace = self._records(outcome, len(message.body))
            env = outcome.envelope
            with contextlib.suppress(StoreUnavailable):
                # Attack traffic (forged, replayed, garbage) is recorded best-effort.
                await self._store.record_decision(
                    entry, trace, outcome.trace_id, env.id if env else None
                )

    def _records(self, outcome: Outcome, size: int) -> tuple[bytes, bytes]:
        entry = decision_entry(
            outcome.decision, outcome.trace_id, outcome.received_ms, outcome.envelope,
            outcome.spent_minor,
        )  # fmt: skip
        trace = trace_record(
            entry, outcome.decision, outcome.envelope, size, outcome.monitoring, self._clock()
        )
        return orjson.dumps(entry), orjson.dumps(trace)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Decide one ingress message, then publish its outcome and ack it atomically."""
        received_ms = self._clock()
        policy = self.policy
        try:
            decoded = decode_envelope(message.body, policy.gates.max_envelope_bytes)
        except EnvelopeError as exc:
            decision = reject_undecodable(exc, policy)
            await self._commit(
                message, Outcome(decision, _trace_id(), received_ms, None, exc.field)
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
        digest = hashlib.sha256(message.body).hexdigest()
        signature_ok = signature_valid(decoded)
        claim = Claim.NEW
        if signature_ok:
            # Only authentic messages may claim an id: a forger must not be able to burn
            # the ids and nonces of messages a real sender has yet to send.
            claim, first_ms = await self._store.claim_at(
                env, digest, bool(message.redelivered), received_ms
            )
            if claim in (Claim.DONE, Claim.COPY):
                # The same bytes again: one outcome per message, never a second.
                self.counts["duplicate"] += 1
                await self._committer_or_fail().commit(message, None)
                return
            # A retry is decided as of its first claim: time lost to a fault is no skew.
            received_ms = first_ms or received_ms
            ctx = await self._store.context(env, received_ms, replayed=claim is Claim.REPLAY)
        else:
            ctx = TrustContext(peer=PeerState(did=env.sender), recipient=None)
        decision = decide(decoded, ctx, policy, received_ms, signature_ok=signature_ok)
        decision = await reserve_payment(self._store, env, decision, policy, received_ms)
        if env.kind == "report" and decision.gate in _REPORTABLE_DESPITE:
            decision = await self._apply_report(env, ctx, decision, policy, received_ms)
        currency = env.payment.currency if env.payment is not None else ""
        outcome = Outcome(
            decision, _trace_id(), received_ms, env,
            spent_minor=ctx.peer.spent_24h_minor.get(currency, 0),
            monitoring=ctx.pact.monitoring if ctx.pact is not None else DEFAULT_MONITORING,
        )  # fmt: skip
        finishes = signature_ok and claim is not Claim.REPLAY
        await self._commit(message, outcome, record=not finishes)
        if finishes:
            await self._record_finish(env, digest, outcome, len(message.body))

    async def _apply_report(
        self, env: Envelope, ctx: TrustContext, decision: Decision, policy: Policy, now_ms: int
    ) -> Decision:
        """Apply an outcome report once, from the recipient of a delivered message only,
        weighted by the reporter's own trust (its composite on this very message).

        The report is applied even when the reported peer's own gates (unknown recipient,
        privacy, pact) then block its delivery: a peer must not be able to refuse the
        reports about itself."""
        try:
            report = parse_report(env.body)
        except EnvelopeError as exc:
            return blocked(exc.code, str(exc), policy)
        code = await self._store.claim_report(env.sender, env.recipient, report.message_id, policy)
        accepted, _, domain = code.partition("|")
        if accepted != "ok":
            return blocked(code, REFUSALS.get(code, code), policy)
        score = decision.composite
        if score is None:
            score = sender_composite(env, ctx, policy, now_ms)
        weight = reporter_weight(score, policy)
        await self._store.apply_report(
            env.recipient, env.sender, report, weight, policy, now_ms, domain=domain
        )
        traced = await self._store.trace_id_of(report.message_id)
        if traced is not None:
            await self._store.add_trace_event(
                traced,
                {"event": "report", "outcome": report.outcome, "severity": report.severity,
                 "reporter": env.sender, "weight": round(weight, 4), "at_ms": now_ms},
            )  # fmt: skip
        log.info(
            "report %s on %s from %s applied with weight %.2f",
            report.outcome, env.recipient, env.sender, weight,
        )  # fmt: skip
        return replace(decision, reasons=(*decision.reasons, "report_applied"))

    async def _record_finish(self, env: Envelope, digest: str, outcome: Outcome, size: int) -> None:
        decision, now_ms = outcome.decision, outcome.received_ms
        entry, trace = self._records(outcome, size)
        result = Finish(
            outcome=f"{decision.action.value}|{env.recipient}",
            clean=decision.gate is None,
            delivered=decision.action is Action.DELIVER,
            size=size,
            gate_failed=decision.gate is not None,
            outside_manifest="kind_outside_manifest" in decision.reasons,
            trace_id=outcome.trace_id,
            entry=entry,
            trace=trace,
        )
        try:
            anomaly = await self._store.finish(env, digest, result, self.policy, now_ms)
        except StoreUnavailable:
            # The outcome is committed already; the record is written once Redis returns.
            self._unfinished.append((env, digest, result, now_ms))
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
            raw,
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
    }


def record_headers(outcome: Outcome) -> dict[str, Any]:
    """Headers of a blocked or escalation record: the trust headers plus who and whom."""
    headers = trust_headers(outcome)
    if outcome.envelope is not None:
        headers["x-trust-sender"] = outcome.envelope.sender
        headers["x-trust-recipient"] = outcome.envelope.recipient
    return headers


async def reserve_payment(
    store: RedisStore, env: Envelope, decision: Decision, policy: Policy, now_ms: int
) -> Decision:
    """Reserve a delivered payment against the rolling 24 h cap, atomically; a payment
    that no longer fits (another router's landed first) is escalated instead."""
    if decision.action is not Action.DELIVER or env.payment is None:
        return decision
    caps = policy.caps
    per_day = caps.trusted_per_day if decision.tier is Tier.TRUSTED else caps.established_per_day
    payment = env.payment
    cap_minor = to_minor(per_day, payment.currency)
    if await store.reserve_spend(
        env.sender, payment.currency, payment.minor_units, cap_minor, env.id, now_ms
    ):
        return decision
    reasons = ("daily_cap_exceeded", *decision.reasons[1:])
    return replace(decision, action=Action.ESCALATE, reasons=reasons)


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


def _trace_id() -> str:
    return uuid.uuid4().hex


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
