"""Reviewers' decisions on the blocked stream: release a false positive to its recipient, or
confirm the block (optionally counting it against the sender).

A blocked record stays on its stream, so a release is guarded by the review record itself
(SET NX, broker/ops/audit.py); a release interrupted mid-commit stays recorded as pending
rather than risk a second delivery. What is delivered is the original bytes, whose
signature is verified again first."""

from __future__ import annotations

from typing import Any

from broker.amqp.streams import Offset
from broker.config import BrokerConfig
from broker.core.envelope import Envelope
from broker.core.records import Record
from broker.errors import ReviewError
from broker.ops.audit import (
    audited,
    check_not_revoked,
    count_payment,
    current_ms,
    mark_done,
    record_claim,
)
from broker.ops.find import find_blocked
from broker.ops.rules import (
    UNPENALISABLE,
    UNRELEASABLE,
    authentic_envelope,
    check_request,
    check_unexpired,
    claim_record,
    overridden,
    recorded_decision,
)
from broker.ops.transaction import COMMIT_UNKNOWN, transaction
from broker.router.pipeline import Outcome
from broker.store.redis import RedisStore


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
    now_ms = current_ms(now_ms)
    check_request(trace_id, reviewer, why)
    async with audited(store, trace_id, "release", reviewer, why, now_ms):
        record, raw, env = await _releasable(config, store, trace_id, now_ms, offset)
        claim = claim_record(record, trace_id, "release", reviewer, why, now_ms)
        # An expired escalation was never decided by anyone: it may still be released.
        await record_claim(store, trace_id, claim, take_over_pending=False, replaces="expire")
        await count_payment(store, env, now_ms)
        decision = overridden(recorded_decision(record), "released")
        outcome = Outcome(decision, trace_id, record.get("received_ms") or now_ms, env)
        try:
            async with transaction(config) as tx:
                await tx.deliver(raw, outcome, {"x-trust-released-by": reviewer})
                await tx.commit(decisive=True)
        except ReviewError as exc:
            if exc.code != COMMIT_UNKNOWN:
                await store.abandon_review(trace_id, claim["token"])
            raise
        return await mark_done(store, trace_id, claim)


async def _releasable(
    config: BrokerConfig, store: RedisStore, trace_id: str, now_ms: int, offset: Offset | None
) -> tuple[Record, bytes, Envelope]:
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
    await check_not_revoked(store, env, now_ms)
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
    now_ms = current_ms(now_ms)
    check_request(trace_id, reviewer, why)
    async with audited(store, trace_id, "confirm", reviewer, why, now_ms):
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
        claim = claim_record(record, trace_id, "confirm", reviewer, why, now_ms)
        await record_claim(store, trace_id, {**claim, "penalised": sender}, take_over_pending=False)
        if sender is not None:
            await store.add_outcome(sender, success=False, weight=1.0, now_ms=now_ms, policy=policy)
        return await mark_done(store, trace_id, claim, penalised=sender)
