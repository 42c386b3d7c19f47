"""Composite score, tier and the routing action (payments need more trust)."""

from __future__ import annotations

from broker.core.currency import to_minor
from broker.core.decision import Action, Tier
from broker.core.envelope import Envelope
from broker.core.policy import DIMENSIONS, Policy
from broker.core.scoring.stake import reference_minor
from broker.core.state import TrustContext
from broker.reasons import Reason

REMEDIATION = {
    "identity": "peer must complete identity verification (handshake and issuer credential)",
    "reputation": "peer must build reputation through verified successful interactions",
    "compliance": "peer must agree a pact with the recipient (a manifest only narrows)",
    "behavioral": "peer is under observation; only clean behaviour over time restores trust",
    "stake": "peer must post a bond from a trusted custodian covering its payment exposure",
}


def composite(scores: dict[str, float], policy: Policy) -> float:
    """Weighted sum of the dimension scores, rounded to 1e-9 so tier edges are exact."""
    weights = policy.weights
    total = (
        weights.identity * scores["identity"]
        + weights.reputation * scores["reputation"]
        + weights.compliance * scores["compliance"]
        + weights.behavioral * scores["behavioral"]
        + weights.stake * scores["stake"]
    )
    return round(min(1.0, max(0.0, total)), 9)


def weakest_dimension(scores: dict[str, float], policy: Policy) -> str:
    """The dimension whose shortfall costs the most composite (weight x (1 - score))."""
    weights = policy.weights.as_dict()
    return max(DIMENSIONS, key=lambda name: weights[name] * (1.0 - scores[name]))


def tier_of(score: float, policy: Policy) -> Tier:
    """Tier for a composite score; each threshold belongs to the tier it starts."""
    thresholds = policy.thresholds
    if score >= thresholds.trusted:
        return Tier.TRUSTED
    if score >= thresholds.established:
        return Tier.ESTABLISHED
    if score >= thresholds.probation:
        return Tier.PROBATION
    return Tier.BLOCKED


VERIFIED_IDENTITY_REQUIRED = Reason.VERIFIED_IDENTITY_REQUIRED


def capped_tier(
    score: float, policy: Policy, *, identity_verified: bool
) -> tuple[Tier, str | None]:
    """The tier for `score`, except that a sender without an issuer-verified identity is
    blocked whatever its score (with the reason `verified_identity_required`): free
    evidence, however much of it, never buys delivery."""
    tier = tier_of(score, policy)
    if tier is not Tier.BLOCKED and not identity_verified:
        return Tier.BLOCKED, VERIFIED_IDENTITY_REQUIRED
    return tier, None


def route(
    env: Envelope, tier: Tier, ctx: TrustContext, policy: Policy, now_ms: int, reputation: float
) -> tuple[Action, str]:
    """Action and its reason code for a message from a sender in `tier` whose reputation
    for this message is `reputation`."""
    payment = env.payment
    amount = None
    if payment is not None:
        amount = reference_minor(
            payment.minor_units, payment.currency, policy.currency, round_up=True
        )
    return route_inputs(
        tier,
        is_payment=env.is_payment,
        has_amount=payment is not None,
        amount_ref_minor=amount,
        spent_ref_minor=ctx.peer.spent_24h_ref,
        payment_hold=payments_held(ctx, now_ms),
        negative_record=negative_record(reputation, policy),
        policy=policy,
    )


def negative_record(reputation: float, policy: Policy) -> bool:
    """True when verified failures have taken the sender's reputation below the cold-start
    prior: a record worse than none, which no identity, bond or behaviour makes up for."""
    return reputation < policy.reputation.prior - 1e-9


def payments_held(ctx: TrustContext, now_ms: int) -> bool:
    """True while a serious report about one of the sender's payments is unresolved."""
    until = ctx.peer.payment_hold_until_ms
    return until is not None and now_ms < until


def route_inputs(
    tier: Tier,
    *,
    is_payment: bool,
    has_amount: bool,
    amount_ref_minor: int | None,
    spent_ref_minor: int,
    payment_hold: bool = False,
    negative_record: bool = False,
    policy: Policy,
) -> tuple[Action, str]:
    """`route` from recorded inputs alone (what-if replays use this too). Amounts are in
    reference minor units; `amount_ref_minor` is None when the payment's currency has no
    rate in the policy."""
    if tier is Tier.BLOCKED:
        return Action.BLOCK, Reason.INSUFFICIENT_TRUST
    if not is_payment:
        return (
            Action.DELIVER,
            Reason.PROBATION if tier is Tier.PROBATION else Reason.TRUST_SUFFICIENT,
        )
    if tier is Tier.PROBATION:
        return Action.BLOCK, Reason.PAYMENT_TRUST_THRESHOLD
    if not has_amount:
        # A `payment` kind without an intent names no amount, so no cap can vouch for it.
        return Action.ESCALATE, Reason.PAYMENT_AMOUNT_MISSING
    if amount_ref_minor is None:
        # Nor can a cap vouch for an amount it cannot convert into its own unit.
        return Action.ESCALATE, Reason.CURRENCY_UNRATED
    if negative_record:
        # Identity, bond and behaviour can keep a sender established on their own; money
        # from one whose verified record is worse than a newcomer's waits for a human.
        return Action.ESCALATE, Reason.NEGATIVE_RECORD
    if payment_hold:
        # A verified victim says an earlier payment was fraud: a human decides until the
        # report is corroborated (observation) or dismissed. One report cannot block the
        # sender, but it can stop its money moving unattended.
        return Action.ESCALATE, Reason.PAYMENT_HOLD
    caps = policy.caps
    per_message, per_day = (
        (caps.trusted_per_message, caps.trusted_per_day)
        if tier is Tier.TRUSTED
        else (caps.established_per_message, caps.established_per_day)
    )
    reference = policy.currency.reference
    if amount_ref_minor > to_minor(per_message, reference):
        return Action.ESCALATE, Reason.PAYMENT_CAP_EXCEEDED
    if spent_ref_minor + amount_ref_minor > to_minor(per_day, reference):
        return Action.ESCALATE, Reason.DAILY_CAP_EXCEEDED
    return Action.DELIVER, Reason.PAYMENT_WITHIN_CAPS
