"""What happens to one decoded message, without the AMQP around it.

`decide_envelope` gathers the facts (claim, peer state), asks the pure core, reserves a
payment against the daily cap and applies a report; `finish_envelope` records the outcome
and runs the behaviour detectors once the outcome is committed. The router wraps these in
an AMQP transaction; the efficacy simulation (bench/efficacy.py) calls them directly on
simulated time, so it measures the very decision path the router runs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import orjson

from broker import recorder
from broker.clock import wall_clock_ms
from broker.currency import to_minor
from broker.decision import Action, Decision, Tier
from broker.envelope import DecodedEnvelope, Envelope, signature_valid
from broker.errors import EnvelopeError
from broker.policy import Policy
from broker.recorder import DEFAULT_MONITORING, decision_entry, trace_record
from broker.report_review import act_on_serious_report
from broker.reports import REFUSALS, parse_report, reporter_weight
from broker.scoring import blocked, decide, reporter_standing
from broker.scoring.stake import reference_minor
from broker.state import PeerState, TrustContext, organisation_of
from broker.store.redis import Claim, Claimed, Finish, RedisStore

log = logging.getLogger("broker.router")
# A report still counts when only the reported peer's own acceptance rules block it.
# Whether a retry may be routed: (envelope, digest, its claim) -> route it?
SettleRetry = Callable[[Envelope, str, Claimed], Awaitable[bool]]

_REPORTABLE_DESPITE = (None, "unknown_recipient", "privacy_violation", "pact_violation")


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
    """Decide one decoded envelope, claimed for the session `holder`; None when these
    very bytes already have (or are getting) their outcome: a redelivery after a commit,
    or a producer's retry (ack it, nothing else). A retry is routed only when `settle`
    says its holder can no longer commit it (broker/indoubt.py)."""
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
    decision = decide(decoded, ctx, policy, received_ms, signature_ok=signature_ok)
    decision = await reserve_payment(store, env, decision, policy, received_ms)
    if env.kind == "report" and decision.gate in _REPORTABLE_DESPITE:
        decision = await apply_report(store, env, ctx, decision, policy, received_ms)
    outcome = Outcome(
        decision, new_trace_id(), received_ms, env,
        spent_ref_minor=ctx.peer.spent_24h_ref,
        monitoring=ctx.pact.monitoring if ctx.pact is not None else DEFAULT_MONITORING,
        wire=decoded.wire,
    )  # fmt: skip
    return Decided(outcome, digest, finishes=signature_ok and claim is not Claim.REPLAY)


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


async def reserve_payment(
    store: RedisStore, env: Envelope, decision: Decision, policy: Policy, now_ms: int
) -> Decision:
    """Reserve a delivered payment against the rolling 24 h cap (every currency together,
    in reference units), atomically; a payment that no longer fits (another router's
    landed first) is escalated instead."""
    if decision.action is not Action.DELIVER or env.payment is None:
        return decision
    caps = policy.caps
    per_day = caps.trusted_per_day if decision.tier is Tier.TRUSTED else caps.established_per_day
    payment = env.payment
    amount = reference_minor(payment.minor_units, payment.currency, policy.currency, round_up=True)
    assert amount is not None, "a payment without a rate is escalated, never delivered"
    cap_minor = to_minor(per_day, policy.currency.reference)
    if await store.reserve_spend(env.sender, amount, cap_minor, env.id, now_ms):
        return decision
    reasons = ("daily_cap_exceeded", *decision.reasons[1:])
    return replace(decision, action=Action.ESCALATE, reasons=reasons)


async def apply_report(
    store: RedisStore,
    env: Envelope,
    ctx: TrustContext,
    decision: Decision,
    policy: Policy,
    now_ms: int,
) -> Decision:
    """Apply an outcome report once, from the recipient of a delivered message only,
    weighted by the reporter's standing (its own non-report evidence) and capped per
    counterparty organisation.

    The report is applied even when the reported peer's own gates (unknown recipient,
    privacy, pact) then block its delivery: a peer must not be able to refuse the
    reports about itself."""
    try:
        report = parse_report(env.body)
    except EnvelopeError as exc:
        return blocked(exc.code, str(exc), policy)
    code = await store.claim_report(env.sender, env.recipient, report.message_id, policy)
    accepted, _, domain = code.partition("|")
    if accepted != "ok":
        return blocked(code, REFUSALS.get(code, code), policy)
    weight = reporter_weight(reporter_standing(env, ctx, policy, now_ms), policy)
    subject = await store.peer(env.recipient, now_ms)
    reporter_org = organisation_of(ctx.peer.credential) or env.sender
    effect = await store.apply_report(
        env.recipient, env.sender, report, weight, policy, now_ms, domain=domain,
        reporter_org=reporter_org, subject_org=organisation_of(subject.credential),
    )  # fmt: skip
    if effect.serious:
        await act_on_serious_report(
            store, env, report, reporter_org, weight, effect, policy, now_ms, domain=domain
        )
    traced = await store.trace_id_of(report.message_id)
    if traced is not None:
        await store.add_trace_event(
            traced,
            {"event": "report", "outcome": report.outcome, "severity": report.severity,
             "reporter": env.sender, "weight": round(weight, 4),
             "applied": round(effect.added, 4), "serious": effect.serious or None,
             "at_ms": now_ms},
        )  # fmt: skip
    log.info(
        "report %s on %s from %s applied with weight %.2f",
        report.outcome, env.recipient, env.sender, weight,
    )  # fmt: skip
    return replace(decision, reasons=(*decision.reasons, "report_applied"))
