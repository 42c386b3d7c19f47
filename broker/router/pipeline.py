"""What happens to one decoded message, without the AMQP around it.

`decide_envelope` gathers the facts (claim, peer state), asks the pure core for the
message's plan (broker/core/plan.py: the decision and the state changes it implies) and applies
the plan's effects (reserving a payment against the daily cap, counting a report);
`finish_of` says what the store records once the outcome is committed, where the
behaviour detectors run. The router wraps these in an AMQP transaction; the efficacy
simulation (bench/efficacy.py) calls them directly on simulated time, so it measures the
very decision path the router runs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from broker.clock import wall_clock_ms
from broker.core import recorder
from broker.core.decision import Action, Decision
from broker.core.envelope import DecodedEnvelope, Envelope, signature_valid
from broker.core.plan import (
    CAP_EXCEEDED,
    ApplyReport,
    Effect,
    Facts,
    Plan,
    ReserveSpend,
    plan_message,
    spend_effect,
)
from broker.core.policy import Policy
from broker.core.recorder import DEFAULT_MONITORING, decision_entry, trace_record
from broker.core.report_effects import count_report
from broker.core.state import PeerState, TrustContext, organisation_of
from broker.router.report_review import act_on_serious_report
from broker.store.claims import Claim, Claimed, Finish
from broker.store.redis import RedisStore

log = logging.getLogger("broker.router")
# Whether a retry may be routed: (envelope, digest, its claim) -> route it?
SettleRetry = Callable[[Envelope, str, Claimed], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision plus what the router knows about the message it decided."""

    decision: Decision
    trace_id: str
    received_ms: int
    envelope: Envelope | None
    error_field: str = ""
    spent_ref_minor: int = 0
    monitoring: str = DEFAULT_MONITORING
    # What a recipient is given: the RFC 8785 bytes that were verified ('' when none).
    wire: bytes = b""


@dataclass(frozen=True, slots=True)
class Decided:
    """A decided envelope: its outcome, and whether a finish step records it afterwards
    (only authentic, first copies do; forged and replayed ones are recorded best-effort)."""

    outcome: Outcome
    digest: str
    finishes: bool


def new_trace_id() -> str:
    """A fresh trace id carrying the wall-clock time it was made (not a router's or the
    simulation's clock: readers seek the blocked stream by it)."""
    return recorder.new_trace_id(wall_clock_ms())


async def decide_envelope(
    store: RedisStore,
    decoded: DecodedEnvelope,
    raw: bytes,
    policy: Policy,
    received_ms: int,
    *,
    redelivered: bool,
    holder: str = "",
    settle: SettleRetry | None = None,
) -> Decided | None:
    """Decide one decoded envelope, claimed for the session `holder`, and apply the state
    changes its plan lists; None when these very bytes already have (or are getting) their
    outcome: a redelivery after a commit, or a producer's retry (ack it, nothing else). A
    retry is routed only when `settle` says its holder can no longer commit it
    (broker/amqp/indoubt.py)."""
    env = decoded.envelope
    digest = hashlib.sha256(raw).hexdigest()
    signature_ok = signature_valid(decoded)
    claim = Claim.NEW
    if signature_ok:
        # Only authentic messages may claim an id: a forger must not be able to burn
        # the ids and nonces of messages a real sender has yet to send.
        claimed = await store.claim_at(env, digest, redelivered, received_ms, holder)
        claim, first_ms = claimed.claim, claimed.first_ms
        if claim in (Claim.DONE, Claim.COPY):
            return None  # the same bytes again: one outcome per message, never a second
        if claim is Claim.RETRY and settle is not None and not await settle(env, digest, claimed):
            return None  # its holder's commit landed, or it is in flight here already
        # A retry is decided as of its first claim: time lost to a fault is no clock skew.
        received_ms = first_ms or received_ms
        ctx = await store.context(env, received_ms, replayed=claim is Claim.REPLAY)
    else:
        ctx = TrustContext(peer=PeerState(did=env.sender), recipient=None)
    facts = Facts(signature_ok, ctx, replayed=claim is Claim.REPLAY)
    plan = plan_message(decoded, facts, policy, received_ms)
    decision = await apply_plan(store, env, plan, policy, received_ms)
    outcome = Outcome(
        decision, new_trace_id(), received_ms, env,
        spent_ref_minor=ctx.peer.spent_24h_ref,
        monitoring=ctx.pact.monitoring if ctx.pact is not None else DEFAULT_MONITORING,
        wire=decoded.wire,
    )  # fmt: skip
    return Decided(outcome, digest, finishes=plan.finishes)


async def apply_plan(
    store: RedisStore, env: Envelope, plan: Plan, policy: Policy, now_ms: int
) -> Decision:
    """Apply a plan's effects in order; the decision that results (broker/core/plan.py says
    what each effect's refusal makes of it)."""
    decision = plan.decision
    for effect in plan.effects:
        if effect.applies(decision):
            refusal = await _apply(store, env, effect, policy, now_ms)
            decision = effect.settle(decision, refusal, policy)
    return decision


async def _apply(
    store: RedisStore, env: Envelope, effect: Effect, policy: Policy, now_ms: int
) -> str | None:
    """One effect, applied by the store; the reason code when the store refused it."""
    if isinstance(effect, ReserveSpend):
        reserved = await store.reserve_spend(
            effect.sender, effect.amount_minor, effect.cap_minor, effect.message_id, now_ms
        )
        return None if reserved else CAP_EXCEEDED
    return await _apply_report(store, env, effect, policy, now_ms)


def records(outcome: Outcome, size: int, committed_ms: int) -> tuple[bytes, bytes]:
    """The decision log entry and the flight-recorder trace of an outcome, encoded."""
    entry = decision_entry(
        outcome.decision, outcome.trace_id, outcome.received_ms, outcome.envelope,
        outcome.spent_ref_minor,
    )  # fmt: skip
    trace = trace_record(
        entry, outcome.decision, outcome.envelope, size, outcome.monitoring, committed_ms
    )
    return orjson.dumps(entry), orjson.dumps(trace)


def finish_of(decided: Decided, size: int, committed_ms: int) -> Finish:
    """What the store records once a decided envelope's outcome is committed."""
    outcome = decided.outcome
    decision, env = outcome.decision, outcome.envelope
    assert env is not None
    entry, trace = records(outcome, size, committed_ms)
    return Finish(
        action=decision.action.value,
        clean=decision.gate is None,
        delivered=decision.action is Action.DELIVER,
        size=size,
        gate_failed=decision.gate is not None,
        outside_manifest="kind_outside_manifest" in decision.reasons,
        trace_id=outcome.trace_id,
        entry=entry,
        trace=trace,
    )


async def reserve_payment(
    store: RedisStore, env: Envelope, decision: Decision, policy: Policy, now_ms: int
) -> Decision:
    """Reserve a delivered payment against the rolling 24 h cap, atomically; a payment
    that no longer fits (another router's landed first) is escalated instead."""
    spend = spend_effect(env, decision, policy)
    if spend is None:
        return decision
    return await apply_plan(store, env, Plan(decision, (spend,)), policy, now_ms)


async def _apply_report(
    store: RedisStore, env: Envelope, effect: ApplyReport, policy: Policy, now_ms: int
) -> str | None:
    """Count a report once, from the recipient of a delivered message only; the store's
    refusal code otherwise. A serious report also goes to review (report_review)."""
    report, weight = effect.report, effect.weight
    claimed = await store.claim_report(env.sender, env.recipient, report.message_id, policy)
    if claimed.refusal is not None:
        return claimed.refusal
    subject = await store.peer(env.recipient, now_ms)
    count = count_report(
        report, weight, policy, reporter_org=effect.reporter_org,
        subject_org=organisation_of(subject.credential), domain=claimed.domain,
    )  # fmt: skip
    added, serious = 0.0, ""
    if count is not None:
        added = await store.count_report(env.recipient, effect.reporter_org, count, policy, now_ms)
        if count.serious:
            serious = await store.corroborate(env.recipient, effect.reporter_org, policy, now_ms)
            await act_on_serious_report(
                store, env, report, effect.reporter_org, weight, added, serious, policy,
                now_ms, domain=claimed.domain,
            )  # fmt: skip
    traced = await store.trace_id_of(report.message_id)
    if traced is not None:
        await store.add_trace_event(
            traced,
            {"event": "report", "outcome": report.outcome, "severity": report.severity,
             "reporter": env.sender, "weight": round(weight, 4),
             "applied": round(added, 4), "serious": serious or None,
             "at_ms": now_ms},
        )  # fmt: skip
    log.info(
        "report %s on %s from %s applied with weight %.2f",
        report.outcome, env.recipient, env.sender, weight,
    )  # fmt: skip
    return None
