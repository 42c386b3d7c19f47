"""The router: consume ingress -> decide (broker/pipeline.py) -> publish the outcome and
ack the ingress message in one AMQP transaction -> record the outcome.

Every ingress message ends in exactly one place: the recipient's queue, the blocked
stream or the escalation queue. The ingress message is acked in the same transaction
that publishes its outcome (broker/committer.py). When Redis is down the router stops
consuming and requeues what it holds, so nothing is delivered unscored and nothing is
blocked because of the outage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from broker.clock import wall_clock_ms
from broker.committer import Outbound, TransactionalCommitter
from broker.config import BrokerConfig
from broker.decision import Action
from broker.envelope import DecodedEnvelope, Envelope, decode_envelope
from broker.errors import EnvelopeError, StoreUnavailable
from broker.identity import AgentKey
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
from broker.store.redis import Finish, RedisStore, wait_until_available
from broker.topology import declare_router_topology

__all__ = ["Outcome", "Router", "outcome_record", "record_headers", "reserve_payment",
           "trust_headers"]  # fmt: skip

log = logging.getLogger("broker.router")


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
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._committer: TransactionalCommitter | None = None
        self._paused = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unfinished: list[tuple[Envelope, str, Finish, int]] = []
        self.counts: dict[str, int] = {"deliver": 0, "block": 0, "escalate": 0, "duplicate": 0}
        self.metrics = RouterMetrics()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, declare the topology, load the policy and start consuming."""
        self._connection = await aio_pika.connect_robust(self._config.amqp_vhost_url)
        # Transactions, not publisher confirms: see broker/committer.py for why.
        self._channel = await self._connection.channel(publisher_confirms=False)
        self._committer = TransactionalCommitter(self._channel)
        await self._channel.set_qos(prefetch_count=self._config.prefetch)
        self._queue, _ = await declare_router_topology(self._channel, self._config.topology)
        self.policy = await self._store.load_policy()
        if self._broker_key is not None:
            negotiation = NegotiationService(
                self._config, self._store, self._broker_key, self._clock
            )
            await negotiation.start(self._connection)
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
        await self._consume()
        log.info("router started: %r, policy version %d", self._config, self.policy.version)

    async def stop(self) -> None:
        """Stop consuming, let in-flight messages finish, then close."""
        self._stopping.set()
        await self._cancel_consumer()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()
        log.info("router stopped: %s", self.counts)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self) -> None:
        assert self._queue is not None
        self._consumer_tag = await self._queue.consume(self._on_message)

    async def _cancel_consumer(self) -> None:
        if self._queue is not None and self._consumer_tag is not None:
            tag, self._consumer_tag = self._consumer_tag, None
            with contextlib.suppress(AMQPError, RuntimeError):
                await self._queue.cancel(tag)

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
            await self._consume()
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
            # Not committed, so not published: the broker redelivers the message
            # (redelivered=True) once the channel is re-established.
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
        assert self._committer is not None, "router not started"
        return self._committer

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
        decided = await decide_envelope(
            self._store, decoded, message.body, policy, received_ms,
            redelivered=bool(message.redelivered),
        )  # fmt: skip
        if decided is None:
            self.counts["duplicate"] += 1
            await self._committer_or_fail().commit(message, None)
            return
        await self._commit(message, decided.outcome, record=not decided.finishes)
        if decided.finishes:
            await self._record_finish(decided, len(message.body))

    async def _record_finish(self, decided: Decided, size: int) -> None:
        env, now_ms = decided.outcome.envelope, decided.outcome.received_ms
        assert env is not None
        result = finish_of(decided, size, self._clock())
        try:
            anomaly = await self._store.finish(env, decided.digest, result, self.policy, now_ms)
        except StoreUnavailable:
            # The outcome is committed already; the record is written once Redis returns.
            self._unfinished.append((env, decided.digest, result, now_ms))
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
        queue = topology.escalations_queue if action is Action.ESCALATE else topology.blocked_stream
        record = outcome_record(raw, outcome)
        headers = record_headers(outcome)
        message = aio_pika.Message(
            orjson.dumps(record),
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=outcome.trace_id,
        )
        return Outbound("", queue, message)

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
