"""Reviewers' decisions on escalations: approve, reject, expire, ask the sender for more
evidence, re-score with the sender's current standing.

Every decision is recorded in Redis under its trace id (who, when, what, why) before it
takes effect (broker/ops/audit.py), and happens at most once: an escalation leaves its
queue in the same AMQP transaction that publishes its outcome (broker/ops/transaction.py),
so only the one reviewer holding the message can decide it, and a crash before the commit
puts it back undecided. Whatever is delivered is the original bytes, whose signature is
verified again first.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import uuid
from dataclasses import dataclass, replace
from typing import Any

from broker.config import BrokerConfig
from broker.core.decision import Action, Decision
from broker.core.envelope import Envelope, decode_envelope, encode_envelope, sign_envelope
from broker.core.identity import AgentKey
from broker.core.policy import Policy
from broker.core.records import Record
from broker.errors import EnvelopeError, ReviewError
from broker.ops.audit import (
    audited,
    check_not_revoked,
    count_payment,
    current_ms,
    log_done,
    mark_done,
    record_claim,
)
from broker.ops.rules import (
    authentic_envelope,
    check_request,
    check_unexpired,
    claim_record,
    describe_review,
    is_expired,
    overridden,
    recorded_decision,
    rescore_decision,
    set_aside,
)
from broker.ops.transaction import Held, Transaction, transaction
from broker.reasons import Reason
from broker.router.pipeline import Outcome, reserve_payment
from broker.store.redis import RedisStore

log = logging.getLogger(__name__)


SWEEPER = "sweeper"


@dataclass(frozen=True)
class Rescored:
    """The outcome of re-scoring one escalation."""

    trace_id: str
    delivered: bool
    decision: Decision
    review: dict[str, Any] | None


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
    now_ms = current_ms(now_ms)
    check_request(trace_id, reviewer, why)
    async with audited(store, trace_id, "approve", reviewer, why, now_ms):
        policy = await store.load_policy()
        async with transaction(config) as tx:
            held = await _take(tx, store, trace_id)
            raw, decoded = authentic_envelope(held.record, policy.gates.max_envelope_bytes)
            env = decoded.envelope
            check_unexpired(env, now_ms)
            await check_not_revoked(store, env, now_ms)
            claim = claim_record(held.record, trace_id, "approve", reviewer, why, now_ms)
            await record_claim(store, trace_id, claim, take_over_pending=True)
            await count_payment(store, env, now_ms)
            decision = overridden(recorded_decision(held.record), "approved")
            outcome = Outcome(decision, trace_id, held.record.get("received_ms") or now_ms, env)
            await tx.deliver(raw, outcome, {"x-trust-approved-by": reviewer})
            await tx.commit([held], decisive=True)
        await store.stop_awaiting_evidence(trace_id)
        return await mark_done(store, trace_id, claim)


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
    now_ms = current_ms(now_ms)
    check_request(trace_id, reviewer, why)
    async with audited(store, trace_id, "reject", reviewer, why, now_ms):
        policy = await store.load_policy()
        async with transaction(config) as tx:
            held = await _take(tx, store, trace_id)
            raw, env = _raw_and_envelope(held.record)
            sender = _authentic_sender(held.record, policy)
            claim = claim_record(held.record, trace_id, "reject", reviewer, why, now_ms)
            await record_claim(store, trace_id, claim, take_over_pending=True)
            decision = set_aside(
                recorded_decision(held.record),
                Reason.ESCALATION_REJECTED,
                f"a reviewer rejected it: {why}",
            )
            outcome = Outcome(decision, trace_id, held.record.get("received_ms") or now_ms, env)
            await tx.block(raw, outcome, {"x-trust-rejected-by": reviewer})
            await tx.commit([held], decisive=True)
        if sender is not None:
            await store.add_outcome(sender, success=False, weight=1.0, now_ms=now_ms, policy=policy)
        await store.stop_awaiting_evidence(trace_id)
        return await mark_done(store, trace_id, claim, penalised=sender)


def _raw_and_envelope(record: Record) -> tuple[bytes, Envelope | None]:
    """The record's bytes and, if they decode, their envelope (signature not checked)."""
    try:
        raw = base64.b64decode(record.get("raw_b64") or "", validate=True)
    except (ValueError, binascii.Error):
        return b"", None
    try:
        return raw, decode_envelope(raw, len(raw) + 1).envelope
    except EnvelopeError:
        return raw, None  # kept as they are: the blocked stream keeps what arrived


def _authentic_sender(record: Record, policy: Policy) -> str | None:
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
    expired: list[tuple[Held, dict[str, Any]]] = []
    async with transaction(config) as tx:
        for held in await tx.take_all():
            if not is_expired(held.record, now_ms, older_than_ms):
                continue
            claim = claim_record(held.record, held.trace_id, "expire", reviewer, why, now_ms)
            if await store.claim_review(held.trace_id, claim, take_over_pending=True) is not None:
                continue
            raw, env = _raw_and_envelope(held.record)
            decision = set_aside(
                recorded_decision(held.record),
                Reason.ESCALATION_EXPIRED,
                f"nobody decided it: {why}",
            )
            received = held.record.get("received_ms") or now_ms
            await tx.block(raw, Outcome(decision, held.trace_id, received, env), {})
            expired.append((held, claim))
        await tx.commit([held for held, _ in expired], decisive=True)
    done = []
    for held, claim in expired:
        done.append(await mark_done(store, held.trace_id, claim))
        entry = {"action": "expire", "reviewer": reviewer, "why": why, "at": now_ms}
        await log_done(store, held.trace_id, {**entry, "outcome": "done"})
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
    now_ms = current_ms(now_ms)
    check_request(trace_id, reviewer, why, why_required=False)
    async with audited(store, trace_id, "request-evidence", reviewer, why, now_ms):
        policy = await store.load_policy()
        async with transaction(config) as tx:
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
    broker_key: AgentKey, record: Record, env: Envelope, why: str, now_ms: int
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
    now_ms = current_ms(now_ms)
    check_request(trace_id, reviewer, "", why_required=False)
    async with audited(store, trace_id, "rescore", reviewer, "", now_ms) as entry:
        policy = await store.load_policy()
        async with transaction(config) as tx:
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
            claim = claim_record(held.record, trace_id, "rescore", reviewer, "", now_ms)
            await record_claim(store, trace_id, claim, take_over_pending=True)
            outcome = Outcome(
                replace(decision, reasons=(*decision.reasons, "rescored")), trace_id, received, env
            )
            await tx.deliver(raw, outcome, {"x-trust-rescored-by": reviewer})
            await tx.commit([held], decisive=True)
        await store.stop_awaiting_evidence(trace_id)
        review = await mark_done(store, trace_id, claim, reasons=list(decision.reasons))
        return Rescored(trace_id, True, decision, review)


async def _take(tx: Transaction, store: RedisStore, trace_id: str) -> Held:
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
