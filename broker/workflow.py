"""Reviewers' decisions on what the router set aside.

Blocks: release a false positive to its recipient, or confirm it (optionally counting it
against the sender). Escalations: approve, reject, expire, ask the sender for more
evidence, re-score with the sender's current standing.

Every decision is recorded in Redis under its trace id (who, when, what, why) before it
takes effect, and happens at most once:
- a blocked record stays on its stream, so a release is guarded by the review record
  itself (SET NX); a release interrupted mid-commit stays recorded as pending rather
  than risk a second delivery;
- an escalation leaves its queue in the same AMQP transaction that publishes its
  outcome (see broker/committer.py), so only the one reviewer holding the message can
  decide it, and a crash before the commit puts it back undecided.
Whatever is delivered is the original bytes, whose signature is verified again first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from aiormq.abc import AbstractChannel as UnderlayChannel

from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.decision import Action, Decision, Tier
from broker.envelope import (
    DecodedEnvelope,
    Envelope,
    decode_envelope,
    encode_envelope,
    sign_envelope,
    signature_valid,
)
from broker.errors import EnvelopeError, TrustBrokerError
from broker.failover import connect_config
from broker.identity import AgentKey
from broker.pipeline import Outcome, reserve_payment
from broker.policy import Policy
from broker.records import UNPARSEABLE, parse_record
from broker.review import Offset, ReviewError, amqp_errors, find_blocked, iso_ms
from broker.router import outcome_record, record_headers, trust_headers
from broker.scoring import decide
from broker.scoring.stake import reference_minor
from broker.state import TrustContext
from broker.store.redis import RedisStore

__all__ = [
    "Rescored",
    "ReviewError",
    "Sweep",
    "approve_escalation",
    "confirm_blocked",
    "expire_escalations",
    "reject_escalation",
    "release_blocked",
    "request_evidence",
    "rescore_escalation",
    "run_sweeper",
    "sweep_once",
]

log = logging.getLogger("broker.workflow")

SWEEPER = "sweeper"
COMMIT_UNKNOWN = "commit_unknown"
# Blocked records no reviewer may release, and why.
UNRELEASABLE = {
    "replay": "a replay is a second copy of a message already seen; releasing it would "
    "deliver that message twice",
    "revoked_key": "the sender's key is revoked; a block for that reason is never a false positive",
    UNPARSEABLE: "this entry is not a record a router wrote, so nothing vouches for its bytes; "
    "it can only be confirmed",
}
# Blocked records that say nothing about their sender's conduct.
UNPENALISABLE = {
    "replay": "anyone who saw the message can replay it: a replay proves nothing about its sender",
    UNPARSEABLE: "this entry is not a record a router wrote: it names no sender",
}
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_MAX_HELD = 10_000
_TAKE_ATTEMPTS = 3
# Quorum queues may drop a message returned too often (RabbitMQ 4.0 sets a default
# delivery-limit of 20); an escalation returned this often goes back as a fresh copy.
_REFRESH_AFTER_RETURNS = 10
_NO_CAP = 2**53


@dataclass(frozen=True)
class Rescored:
    """The outcome of re-scoring one escalation."""

    trace_id: str
    delivered: bool
    decision: Decision
    review: dict[str, Any] | None


@dataclass(frozen=True)
class Sweep:
    """What one sweeper pass did."""

    expired: list[dict[str, Any]]
    rescored: list[Rescored]


# -- pure checks ------------------------------------------------------------------------------


def check_request(trace_id: str, reviewer: str, why: str, *, why_required: bool = True) -> None:
    """Refuse a review action that does not say on what, by whom and (usually) why."""
    if not _TRACE_ID.fullmatch(trace_id):
        raise ReviewError(f"{trace_id!r} is not a trace id (32 hex characters)", code="bad_request")
    if not reviewer.strip() or len(reviewer) > 64 or not reviewer.isprintable():
        raise ReviewError(
            "a reviewer name (1-64 printable characters) is required", code="no_reviewer"
        )
    if (why_required and not why.strip()) or len(why) > 1000:
        raise ReviewError(
            "say why (--why, 1-1000 characters): it is kept on record", code="no_reason"
        )


def authentic_envelope(record: dict[str, Any], max_bytes: int) -> tuple[bytes, DecodedEnvelope]:
    """The bytes to deliver (the RFC 8785 form of the record's original bytes, exactly as
    verified) and their envelope, if and only if its sender signed them."""
    if UNPARSEABLE in record:
        raise ReviewError(
            f"this entry is not a record a router wrote ({record[UNPARSEABLE]}); nothing "
            "vouches for its bytes, so it is never delivered",
            code=UNPARSEABLE,
        )
    try:
        raw = base64.b64decode(record["raw_b64"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise ReviewError("the record keeps no original bytes", code="no_envelope") from None
    try:
        decoded = decode_envelope(raw, max_bytes)
    except EnvelopeError as exc:
        raise ReviewError(
            f"the original bytes are not an envelope: {exc}", code="no_envelope"
        ) from None
    if not signature_valid(decoded):
        raise ReviewError(
            "the original bytes fail signature verification against the sender's did:key: "
            "they are not what the sender signed",
            code="bad_signature",
        )
    env = decoded.envelope
    if (record.get("message_id"), record.get("sender"), record.get("recipient")) != (
        env.id, env.sender, env.recipient,
    ):  # fmt: skip
        raise ReviewError("the record does not match its own signed bytes", code="record_mismatch")
    return decoded.wire or raw, decoded


def check_unexpired(env: Envelope, now_ms: int) -> None:
    """Refuse to deliver what its sender said must not arrive after expires_at."""
    if env.expires_at is not None and env.expires_at <= now_ms:
        raise ReviewError(
            f"the envelope expired at {iso_ms(env.expires_at)}; its sender withdrew it",
            code="expired",
        )


def recorded_decision(record: dict[str, Any]) -> Decision:
    """The Decision a blocked or escalation record was written with."""
    data = record["decision"]
    tier = data.get("tier")
    return Decision(
        action=Action(data["action"]),
        tier=Tier(tier) if tier in Tier._value2member_map_ else Tier.BLOCKED,
        composite=data.get("composite"),
        dimensions=dict(data.get("dimensions") or {}),
        weakest=data.get("weakest"),
        reasons=tuple(data.get("reasons") or ()),
        remediation=str(data.get("remediation") or ""),
        policy_version=int(data.get("policy_version") or 0),
        gate=data.get("gate"),
        identity_verified=data.get("identity_verified") is True,
        payment_hold=data.get("payment_hold") is True,
    )


def rescore_decision(
    decoded: DecodedEnvelope,
    ctx: TrustContext,
    policy: Policy,
    received_ms: int,
    now_ms: int,
) -> Decision:
    """Decide a held escalation again with the sender's standing at `now_ms`.

    The clock-skew gate judged created_at against the time of receipt, and the message has
    waited in the queue since; the allowance grows by that wait so the gate still means
    what it meant then. Expiry, revocation, recipient and privacy are judged as of now.
    The signature was verified by the caller (authentic_envelope)."""
    waited = max(0, now_ms - received_ms)
    gates = policy.gates.model_copy(
        update={"max_clock_skew_ms": policy.gates.max_clock_skew_ms + waited}
    )
    return decide(
        decoded, ctx, policy.model_copy(update={"gates": gates}), now_ms, signature_ok=True
    )


def is_expired(record: dict[str, Any], now_ms: int, older_than_ms: int) -> bool:
    """True when an escalation has waited more than `older_than_ms` (or has no time)."""
    received = record.get("received_ms")
    return not isinstance(received, int) or now_ms - received > older_than_ms


def describe_review(review: dict[str, Any]) -> str:
    """One line saying who decided what on a trace, and when."""
    state = "" if review.get("state") == "done" else " (in progress or interrupted: unconfirmed)"
    return (
        f"{review.get('action')} by {review.get('reviewer')} at {iso_ms(int(review['at']))}"
        f"{state}: {review.get('why')}"
    )


def _overridden(decision: Decision, reason: str) -> Decision:
    """A blocked or escalated decision turned into a delivery by `reason`."""
    return replace(decision, action=Action.DELIVER, reasons=(reason, *decision.reasons))


def _set_aside(decision: Decision, reason: str, remediation: str) -> Decision:
    """An escalated decision ended on the blocked stream for `reason`."""
    return replace(
        decision, action=Action.BLOCK, reasons=(reason, *decision.reasons), remediation=remediation
    )


def _claim_record(
    record: dict[str, Any], trace_id: str, action: str, reviewer: str, why: str, now_ms: int
) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "action": action,
        "reviewer": reviewer,
        "why": why,
        "at": now_ms,
        "state": "pending",
        "token": uuid.uuid4().hex,
        "message_id": record.get("message_id"),
        "sender": record.get("sender"),
        "recipient": record.get("recipient"),
        "reason": record.get("reason"),
    }


# -- AMQP: one transactional channel ----------------------------------------------------------


@dataclass
class _Held:
    """An escalation taken off its queue with basic.get; ours until acked or returned."""

    message: AbstractIncomingMessage
    record: dict[str, Any]

    @property
    def trace_id(self) -> str:
        return str(self.record.get("trace_id") or "")


class _Tx:
    """A channel in transaction mode: publishes, acks and returns take effect together at
    commit; closing the channel without a commit returns everything held."""

    def __init__(self, config: BrokerConfig, channel: AbstractChannel, underlay: UnderlayChannel):
        self._config = config
        self._channel = channel
        self._underlay = underlay
        self.held: list[_Held] = []

    async def take_all(self, limit: int = _MAX_HELD) -> list[_Held]:
        """Hold every pending escalation (up to `limit`)."""
        queue = await self._channel.get_queue(self._config.topology.escalations_queue, ensure=False)
        while len(self.held) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            record = parse_record(message.body, message.headers or {})
            self.held.append(_Held(message, record))
        return self.held

    async def take(self, trace_id: str) -> _Held:
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

    async def commit(self, done: Iterable[_Held] = (), *, decisive: bool = False) -> None:
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
        except (AMQPError, OSError, TimeoutError, RuntimeError) as exc:
            if not decisive:
                raise ReviewError(f"RabbitMQ failed: {exc!r}", code="amqp_unavailable") from exc
            raise ReviewError(
                f"the commit's outcome is unknown ({type(exc).__name__}); the decision stays "
                "recorded as pending: check the recipient before acting again",
                code=COMMIT_UNKNOWN,
            ) from exc

    async def _give_back(self, held: _Held) -> None:
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
async def _transaction(config: BrokerConfig) -> AsyncIterator[_Tx]:
    """A transactional channel on a connection of its own; AMQP errors become ReviewError."""
    with amqp_errors():
        connection = await connect_config(config)
        async with connection:
            channel = await connection.channel(publisher_confirms=False)
            underlay = await channel.get_underlay_channel()
            await underlay.tx_select()
            yield _Tx(config, channel, underlay)


# -- Redis: the record of decisions -------------------------------------------------------------


@contextlib.asynccontextmanager
async def _audit(
    store: RedisStore, trace_id: str, action: str, reviewer: str, why: str, now_ms: int
) -> AsyncIterator[dict[str, Any]]:
    """Log the action on the trace's review log, refused or not."""
    entry: dict[str, Any] = {
        "action": action, "reviewer": reviewer, "why": why, "at": now_ms, "outcome": "done",
    }  # fmt: skip
    try:
        yield entry
    except ReviewError as exc:
        refused = {**entry, "outcome": "refused", "code": exc.code, "message": str(exc)}
        await store.log_review(trace_id, refused)
        raise
    if entry.pop("recorded", True):
        await _record_done(store, trace_id, entry)


async def _record_done(store: RedisStore, trace_id: str, entry: dict[str, Any]) -> None:
    """On the trace's review log, and as a later event of the decision's flight record."""
    await store.log_review(trace_id, entry)
    event = {"event": "review", **{k: v for k, v in entry.items() if k != "at"}}
    await store.add_trace_event(trace_id, {**event, "at_ms": entry["at"]})


async def _claim(
    store: RedisStore,
    trace_id: str,
    claim: dict[str, Any],
    *,
    take_over_pending: bool,
    replaces: str = "",
) -> None:
    earlier = await store.claim_review(
        trace_id, claim, take_over_pending=take_over_pending, replaces=replaces
    )
    if earlier is not None:
        raise ReviewError(f"already decided: {describe_review(earlier)}", code="already_decided")


async def _finish(
    store: RedisStore, trace_id: str, claim: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    done = {**claim, **extra, "state": "done"}
    await store.finish_review(trace_id, done)
    return done


async def _take(tx: _Tx, store: RedisStore, trace_id: str) -> _Held:
    """Hold the escalation; if it is gone, say who decided it when the record knows."""
    try:
        return await tx.take(trace_id)
    except ReviewError as exc:
        earlier = await store.review(trace_id)
        if earlier is None:
            raise
        raise ReviewError(
            f"already decided: {describe_review(earlier)}", code="already_decided"
        ) from exc


async def _check_not_revoked(store: RedisStore, env: Envelope, now_ms: int) -> None:
    if (await store.peer(env.sender, now_ms, cached=False)).revoked:
        raise ReviewError("the sender's key is revoked", code="revoked_key")


async def _count_payment(store: RedisStore, env: Envelope, now_ms: int) -> None:
    """A payment a reviewer let through still counts in the sender's rolling 24 h total
    (keyed by message id: a retry does not count it twice), in reference units."""
    if env.payment is None:
        return
    payment = env.payment
    money = (await store.load_policy()).currency
    amount = reference_minor(payment.minor_units, payment.currency, money, round_up=True)
    if amount is None:
        log.warning("approved payment %s in %s has no rate: not counted in the daily sum",
                    env.id, payment.currency)  # fmt: skip
        return
    await store.reserve_spend(env.sender, amount, _NO_CAP, env.id, now_ms)


def _now(now_ms: int | None) -> int:
    return wall_clock_ms() if now_ms is None else now_ms


# -- blocked messages -----------------------------------------------------------------------------


async def release_blocked(
    config: BrokerConfig,
    store: RedisStore,
    trace_id: str,
    reviewer: str,
    why: str,
    now_ms: int | None = None,
    *,
    offset: Offset | None = None,
) -> dict[str, Any]:
    """Deliver a blocked message judged a false positive: signature re-verified, the release
    recorded first, at most once. Returns the review record."""
    now_ms = _now(now_ms)
    check_request(trace_id, reviewer, why)
    async with _audit(store, trace_id, "release", reviewer, why, now_ms):
        record, raw, env = await _releasable(config, store, trace_id, now_ms, offset)
        claim = _claim_record(record, trace_id, "release", reviewer, why, now_ms)
        # An expired escalation was never decided by anyone: it may still be released.
        await _claim(store, trace_id, claim, take_over_pending=False, replaces="expire")
        await _count_payment(store, env, now_ms)
        decision = _overridden(recorded_decision(record), "released")
        outcome = Outcome(decision, trace_id, record.get("received_ms") or now_ms, env)
        try:
            async with _transaction(config) as tx:
                await tx.deliver(raw, outcome, {"x-trust-released-by": reviewer})
                await tx.commit(decisive=True)
        except ReviewError as exc:
            if exc.code != COMMIT_UNKNOWN:
                await store.abandon_review(trace_id, claim["token"])
            raise
        return await _finish(store, trace_id, claim)


async def _releasable(
    config: BrokerConfig, store: RedisStore, trace_id: str, now_ms: int, offset: Offset | None
) -> tuple[dict[str, Any], bytes, Envelope]:
    """The blocked record, its original bytes and their envelope, if they may go out now."""
    entry = await find_blocked(config, trace_id, offset=offset, index=store)
    if entry is None:
        raise ReviewError(f"no blocked record {trace_id} on the stream", code="not_found")
    record = entry.record
    if record.get("reason") in UNRELEASABLE:
        raise ReviewError(UNRELEASABLE[record["reason"]], code="not_releasable")
    policy = await store.load_policy()
    raw, decoded = authentic_envelope(record, policy.gates.max_envelope_bytes)
    env = decoded.envelope
    check_unexpired(env, now_ms)
    await _check_not_revoked(store, env, now_ms)
    if await store.recipient(env.recipient, now_ms) is None:
        raise ReviewError("the recipient is not a registered agent", code="unknown_recipient")
    return record, raw, env


async def confirm_blocked(
    config: BrokerConfig,
    store: RedisStore,
    trace_id: str,
    reviewer: str,
    why: str,
    now_ms: int | None = None,
    *,
    penalise: bool = False,
    offset: Offset | None = None,
) -> dict[str, Any]:
    """Confirm a block was right; with `penalise`, count it as a verified failure of its
    sender (only when the record proves who sent it)."""
    now_ms = _now(now_ms)
    check_request(trace_id, reviewer, why)
    async with _audit(store, trace_id, "confirm", reviewer, why, now_ms):
        entry = await find_blocked(config, trace_id, offset=offset, index=store)
        if entry is None:
            raise ReviewError(f"no blocked record {trace_id} on the stream", code="not_found")
        record = entry.record
        policy = await store.load_policy()
        sender = None
        if penalise:
            if record.get("reason") in UNPENALISABLE:
                raise ReviewError(UNPENALISABLE[record["reason"]], code="not_penalisable")
            _, decoded = authentic_envelope(record, policy.gates.max_envelope_bytes)
            sender = decoded.envelope.sender
        claim = _claim_record(record, trace_id, "confirm", reviewer, why, now_ms)
        await _claim(store, trace_id, {**claim, "penalised": sender}, take_over_pending=False)
        if sender is not None:
            await store.add_outcome(sender, success=False, weight=1.0, now_ms=now_ms, policy=policy)
        return await _finish(store, trace_id, claim, penalised=sender)


# -- escalations -----------------------------------------------------------------------------


async def approve_escalation(
    config: BrokerConfig,
    store: RedisStore,
    trace_id: str,
    reviewer: str,
    why: str,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Deliver an escalated message: taken off the queue in the same transaction, so at
    most once. Returns the review record."""
    now_ms = _now(now_ms)
    check_request(trace_id, reviewer, why)
    async with _audit(store, trace_id, "approve", reviewer, why, now_ms):
        policy = await store.load_policy()
        async with _transaction(config) as tx:
            held = await _take(tx, store, trace_id)
            raw, decoded = authentic_envelope(held.record, policy.gates.max_envelope_bytes)
            env = decoded.envelope
            check_unexpired(env, now_ms)
            await _check_not_revoked(store, env, now_ms)
            claim = _claim_record(held.record, trace_id, "approve", reviewer, why, now_ms)
            await _claim(store, trace_id, claim, take_over_pending=True)
            await _count_payment(store, env, now_ms)
            decision = _overridden(recorded_decision(held.record), "approved")
            outcome = Outcome(decision, trace_id, held.record.get("received_ms") or now_ms, env)
            await tx.deliver(raw, outcome, {"x-trust-approved-by": reviewer})
            await tx.commit([held], decisive=True)
        await store.stop_awaiting_evidence(trace_id)
        return await _finish(store, trace_id, claim)


async def reject_escalation(
    config: BrokerConfig,
    store: RedisStore,
    trace_id: str,
    reviewer: str,
    why: str,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Refuse an escalated message: it moves to the blocked stream (escalation_rejected) in
    the same transaction, and counts as a verified failure of its (authenticated) sender."""
    now_ms = _now(now_ms)
    check_request(trace_id, reviewer, why)
    async with _audit(store, trace_id, "reject", reviewer, why, now_ms):
        policy = await store.load_policy()
        async with _transaction(config) as tx:
            held = await _take(tx, store, trace_id)
            raw, env = _raw_and_envelope(held.record)
            sender = _authentic_sender(held.record, policy)
            claim = _claim_record(held.record, trace_id, "reject", reviewer, why, now_ms)
            await _claim(store, trace_id, claim, take_over_pending=True)
            decision = _set_aside(
                recorded_decision(held.record),
                "escalation_rejected",
                f"a reviewer rejected it: {why}",
            )
            outcome = Outcome(decision, trace_id, held.record.get("received_ms") or now_ms, env)
            await tx.block(raw, outcome, {"x-trust-rejected-by": reviewer})
            await tx.commit([held], decisive=True)
        if sender is not None:
            await store.add_outcome(sender, success=False, weight=1.0, now_ms=now_ms, policy=policy)
        await store.stop_awaiting_evidence(trace_id)
        return await _finish(store, trace_id, claim, penalised=sender)


def _raw_and_envelope(record: dict[str, Any]) -> tuple[bytes, Envelope | None]:
    """The record's bytes and, if they decode, their envelope (signature not checked)."""
    try:
        raw = base64.b64decode(record.get("raw_b64") or "", validate=True)
    except (ValueError, binascii.Error):
        return b"", None
    try:
        return raw, decode_envelope(raw, len(raw) + 1).envelope
    except EnvelopeError:
        return raw, None  # kept as they are: the blocked stream keeps what arrived


def _authentic_sender(record: dict[str, Any], policy: Policy) -> str | None:
    """The sender, when the record's bytes prove it; a forged record penalises nobody."""
    try:
        return authentic_envelope(record, policy.gates.max_envelope_bytes)[1].envelope.sender
    except ReviewError as exc:
        log.warning("escalation %s: %s; its sender is not penalised", record.get("trace_id"), exc)
        return None


async def expire_escalations(
    config: BrokerConfig,
    store: RedisStore,
    now_ms: int,
    older_than_ms: int | None = None,
    *,
    reviewer: str = SWEEPER,
) -> list[dict[str, Any]]:
    """Move escalations nobody decided within `older_than_ms` (default: the policy's
    escalations.expire_after_ms) to the blocked stream (escalation_expired), publish and ack
    in one transaction. Returns their review records."""
    if older_than_ms is None:
        older_than_ms = (await store.load_policy()).escalations.expire_after_ms
    why = f"undecided for more than {older_than_ms // 1000} s"
    expired: list[tuple[_Held, dict[str, Any]]] = []
    async with _transaction(config) as tx:
        for held in await tx.take_all():
            if not is_expired(held.record, now_ms, older_than_ms):
                continue
            claim = _claim_record(held.record, held.trace_id, "expire", reviewer, why, now_ms)
            if await store.claim_review(held.trace_id, claim, take_over_pending=True) is not None:
                continue
            raw, env = _raw_and_envelope(held.record)
            decision = _set_aside(
                recorded_decision(held.record), "escalation_expired", f"nobody decided it: {why}"
            )
            received = held.record.get("received_ms") or now_ms
            await tx.block(raw, Outcome(decision, held.trace_id, received, env), {})
            expired.append((held, claim))
        await tx.commit([held for held, _ in expired], decisive=True)
    done = []
    for held, claim in expired:
        done.append(await _finish(store, held.trace_id, claim))
        entry = {"action": "expire", "reviewer": reviewer, "why": why, "at": now_ms}
        await _record_done(store, held.trace_id, {**entry, "outcome": "done"})
    await store.stop_awaiting_evidence(*(held.trace_id for held, _ in expired))
    return done


async def request_evidence(
    config: BrokerConfig,
    store: RedisStore,
    broker_key: AgentKey,
    trace_id: str,
    reviewer: str,
    why: str = "",
    now_ms: int | None = None,
) -> Envelope:
    """Ask an escalated message's sender for more evidence (a broker-signed request to its
    queue) and re-score the escalation on every sweep until it is decided."""
    now_ms = _now(now_ms)
    check_request(trace_id, reviewer, why, why_required=False)
    async with _audit(store, trace_id, "request-evidence", reviewer, why, now_ms):
        policy = await store.load_policy()
        async with _transaction(config) as tx:
            held = await _take(tx, store, trace_id)
            # Only the proven sender is asked: a forged record must not send mail for it.
            env = authentic_envelope(held.record, policy.gates.max_envelope_bytes)[1].envelope
            request = _evidence_request(broker_key, held.record, env, why, now_ms)
            await store.await_evidence(trace_id, {
                "requested_at": now_ms, "reviewer": reviewer, "why": why,
                "request_id": request.id, "sender": env.sender, "message_id": env.id,
            })  # fmt: skip
            headers = {
                "x-trust-action": "deliver",
                "x-trust-reasons": "evidence_request",
                "x-trust-trace-id": trace_id,
                "x-trust-from-broker": broker_key.did,
            }
            deliver = config.topology.deliver_exchange
            body = encode_envelope(request)
            await tx.publish(deliver, env.sender, body, headers, message_id=request.id)
            await tx.commit()  # the escalation itself goes back to its queue
        return request


def _evidence_request(
    broker_key: AgentKey, record: dict[str, Any], env: Envelope, why: str, now_ms: int
) -> Envelope:
    decision = recorded_decision(record)
    return sign_envelope(
        broker_key,
        id=f"evidence-request-{uuid.uuid4().hex}",
        recipient=env.sender,
        kind="request",
        created_at=now_ms,
        nonce=os.urandom(16).hex(),
        body={
            "type": "trust-broker/evidence-request",
            "trace_id": record.get("trace_id"),
            "message_id": env.id,
            "reason": why,
            "escalation_reason": record.get("reason"),
            "remediation": decision.remediation,
        },
    )


async def rescore_escalation(
    config: BrokerConfig,
    store: RedisStore,
    trace_id: str,
    now_ms: int | None = None,
    *,
    reviewer: str = SWEEPER,
) -> Rescored:
    """Decide an escalation again with its sender's current standing; deliver it (taken off
    the queue in the same transaction) if that now says deliver, else leave it pending."""
    now_ms = _now(now_ms)
    check_request(trace_id, reviewer, "", why_required=False)
    async with _audit(store, trace_id, "rescore", reviewer, "", now_ms) as entry:
        policy = await store.load_policy()
        async with _transaction(config) as tx:
            held = await _take(tx, store, trace_id)
            raw, decoded = authentic_envelope(held.record, policy.gates.max_envelope_bytes)
            env = decoded.envelope
            # The id was claimed when the message first arrived: no replay check again.
            ctx = await store.context(env, now_ms, replayed=False, cached=False)
            received = held.record.get("received_ms") or now_ms
            decision = rescore_decision(decoded, ctx, policy, received, now_ms)
            decision = await reserve_payment(store, env, decision, policy, now_ms)
            if decision.action is not Action.DELIVER:
                await tx.commit()
                # The sweeper's routine "still pending" would flood the record every pass.
                entry.update(
                    outcome="pending", reasons=list(decision.reasons), recorded=reviewer != SWEEPER
                )
                return Rescored(trace_id, False, decision, None)
            claim = _claim_record(held.record, trace_id, "rescore", reviewer, "", now_ms)
            await _claim(store, trace_id, claim, take_over_pending=True)
            outcome = Outcome(
                replace(decision, reasons=(*decision.reasons, "rescored")), trace_id, received, env
            )
            await tx.deliver(raw, outcome, {"x-trust-rescored-by": reviewer})
            await tx.commit([held], decisive=True)
        await store.stop_awaiting_evidence(trace_id)
        review = await _finish(store, trace_id, claim, reasons=list(decision.reasons))
        return Rescored(trace_id, True, decision, review)


# -- the sweeper --------------------------------------------------------------------------------


async def sweep_once(
    config: BrokerConfig,
    store: RedisStore,
    now_ms: int,
    older_than_ms: int | None = None,
) -> Sweep:
    """Expire undecided escalations (after the policy's escalations.expire_after_ms unless
    `older_than_ms` is given), then re-score those awaiting evidence."""
    expired = await expire_escalations(config, store, now_ms, older_than_ms)
    rescored = []
    for trace_id in await store.awaiting_evidence():
        try:
            rescored.append(await rescore_escalation(config, store, trace_id, now_ms))
        except ReviewError as exc:
            if exc.code == "already_decided":
                await store.stop_awaiting_evidence(trace_id)  # decided elsewhere
            else:
                log.info("escalation %s not re-scored: %s", trace_id, exc)
    return Sweep(expired, rescored)


async def run_sweeper(
    config: BrokerConfig,
    store: RedisStore,
    stop: asyncio.Event,
    interval_s: float = 10.0,
    *,
    clock: Callable[[], int] = wall_clock_ms,
) -> None:
    """Every `interval_s`, on one router of the deployment at a time, run sweep_once
    (time limit from the policy in force); until `stop` is set."""
    lock_ms = max(1, int(interval_s * 900))  # a little under the interval: no pass is skipped
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return
        try:
            if await store.try_lock("escalation-sweeper", lock_ms):
                sweep = await sweep_once(config, store, clock())
                delivered = sum(r.delivered for r in sweep.rescored)
                if sweep.expired or delivered:
                    log.info(
                        "escalations: %d expired, %d delivered on re-score",
                        len(sweep.expired),
                        delivered,
                    )
        except TrustBrokerError as exc:
            log.warning("escalation sweep skipped: %s", exc)
        except Exception:
            # A bug must not stop the sweeping for good.
            log.exception("escalation sweep failed")
