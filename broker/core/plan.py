"""What happens to one message, decided in pure code before any of it is done.

`plan_message` takes a decoded envelope and the facts the router gathered about it (the
signature check, whether its id was seen before, the peer state) and returns a `Plan`:
the decision, and the state changes it implies, in the order they are applied. The
router then only applies the plan (broker/router/pipeline.py), commits, and records.

Two changes can be refused by the very state they change, which only the store can tell
atomically: a payment that no longer fits the sender's rolling daily cap (another
router's payment landed first), and a report the store will not count (its reporter was
not the recipient, or it came twice or too late). Each effect therefore says here, in
pure code, what the decision becomes when the store applies it and when it refuses it;
nothing after the plan decides anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from broker.core.currency import to_minor
from broker.core.decision import Action, Decision, Tier
from broker.core.envelope import DecodedEnvelope, Envelope
from broker.core.policy import Policy
from broker.core.reports import REFUSALS, Report, parse_report, reporter_weight
from broker.core.scoring import blocked, decide, reporter_standing
from broker.core.scoring.stake import reference_minor
from broker.core.state import TrustContext, organisation_of
from broker.errors import EnvelopeError
from broker.reasons import Reason

# A report still counts when only the reported peer's own acceptance rules block it: a
# peer must not be able to refuse the reports about itself.
REPORTABLE_DESPITE = (
    None, Reason.UNKNOWN_RECIPIENT, Reason.PRIVACY_VIOLATION, Reason.PACT_VIOLATION,
)  # fmt: skip
CAP_EXCEEDED = Reason.DAILY_CAP_EXCEEDED
REPORT_APPLIED = "report_applied"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the router gathered about a message before deciding it."""

    signature_ok: bool
    ctx: TrustContext
    # Its id or nonce was claimed before by different bytes.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ReserveSpend:
    """Reserve a delivered payment against the sender's rolling 24 h cap, every currency
    together in reference units (refused: the payment is escalated instead)."""

    sender: str
    message_id: str
    amount_minor: int
    cap_minor: int

    def applies(self, decision: Decision) -> bool:
        """Only a payment still to be delivered spends anything."""
        return decision.action is Action.DELIVER

    def settle(self, decision: Decision, refusal: str | None, policy: Policy) -> Decision:
        """The decision once the store reserved the amount (unchanged) or refused it."""
        if refusal is None:
            return decision
        return replace(
            decision, action=Action.ESCALATE, reasons=(str(CAP_EXCEEDED), *decision.reasons[1:])
        )


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """Count an outcome report about the envelope's recipient, weighted by the reporter's
    standing and capped per counterparty organisation (the store checks that the reporter
    received the reported message, once, within the window)."""

    report: Report
    weight: float
    reporter_org: str

    def applies(self, decision: Decision) -> bool:
        """Always: it was planned only for a report its gates let through."""
        return True

    def settle(self, decision: Decision, refusal: str | None, policy: Policy) -> Decision:
        """The decision once the store counted the report, or blocked when it refused."""
        if refusal is None:
            return replace(decision, reasons=(*decision.reasons, REPORT_APPLIED))
        return blocked(refusal, REFUSALS.get(refusal, refusal), policy)


Effect = ApplyReport | ReserveSpend


@dataclass(frozen=True, slots=True)
class Plan:
    """A message's decision and the state changes it implies, in order."""

    decision: Decision
    effects: tuple[Effect, ...] = ()
    # Whether the outcome is recorded (finish) once committed: only authentic first copies;
    # forged and replayed ones are recorded best-effort.
    finishes: bool = False


def plan_message(decoded: DecodedEnvelope, facts: Facts, policy: Policy, now_ms: int) -> Plan:
    """Decide one envelope and list the state changes that follow from the decision.

    A report is applied before its payment (if it carries one) is reserved, so a report
    the store refuses, which is blocked, never spends its sender's cap."""
    env = decoded.envelope
    decision = decide(decoded, facts.ctx, policy, now_ms, signature_ok=facts.signature_ok)
    finishes = facts.signature_ok and not facts.replayed
    effects: list[Effect] = []
    if env.kind == "report" and decision.gate in REPORTABLE_DESPITE:
        try:
            effects.append(report_effect(env, facts.ctx, policy, now_ms))
        except EnvelopeError as exc:
            return Plan(blocked(exc.code, str(exc), policy), (), finishes)
    spend = spend_effect(env, decision, policy)
    if spend is not None:
        effects.append(spend)
    return Plan(decision, tuple(effects), finishes)


def report_effect(env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int) -> ApplyReport:
    """The report in a report envelope, weighted by its sender's standing; EnvelopeError
    (report_malformed) when the body is not a report."""
    report = parse_report(env.body)
    weight = reporter_weight(reporter_standing(env, ctx, policy, now_ms), policy)
    return ApplyReport(report, weight, organisation_of(ctx.peer.credential) or env.sender)


def spend_effect(env: Envelope, decision: Decision, policy: Policy) -> ReserveSpend | None:
    """What a delivered payment reserves against its tier's daily cap; None for anything
    that is not a payment being delivered."""
    if decision.action is not Action.DELIVER or env.payment is None:
        return None
    caps = policy.caps
    per_day = caps.trusted_per_day if decision.tier is Tier.TRUSTED else caps.established_per_day
    payment = env.payment
    amount = reference_minor(payment.minor_units, payment.currency, policy.currency, round_up=True)
    assert amount is not None, "a payment without a rate is escalated, never delivered"
    cap_minor = to_minor(per_day, policy.currency.reference)
    return ReserveSpend(env.sender, env.id, amount, cap_minor)
