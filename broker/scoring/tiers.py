"""Composite score, tier and the routing action (payments need more trust)."""

from __future__ import annotations

from broker.currency import to_minor
from broker.decision import Action, Tier
from broker.envelope import Envelope
from broker.policy import DIMENSIONS, Policy
from broker.state import TrustContext

REMEDIATION = {
    "identity": "peer must complete identity verification (handshake and issuer credential)",
    "reputation": "peer must build reputation through verified successful interactions",
    "compliance": "peer must publish a capability manifest or agree a pact with the recipient",
    "behavioral": "peer is under observation; only clean behaviour over time restores trust",
    "stake": "peer must post a stake bond covering its payment exposure",
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


def route(env: Envelope, tier: Tier, ctx: TrustContext, policy: Policy) -> tuple[Action, str]:
    """Action and its reason code for a message from a sender in `tier`."""
    payment = env.payment
    currency = payment.currency if payment is not None else ""
    return route_inputs(
        tier,
        is_payment=env.is_payment,
        amount_minor=payment.minor_units if payment is not None else None,
        currency=currency,
        spent_minor=ctx.peer.spent_24h_minor.get(currency, 0),
        policy=policy,
    )


def route_inputs(
    tier: Tier,
    *,
    is_payment: bool,
    amount_minor: int | None,
    currency: str,
    spent_minor: int,
    policy: Policy,
) -> tuple[Action, str]:
    """`route` from recorded inputs alone (what-if replays use this too)."""
    if tier is Tier.BLOCKED:
        return Action.BLOCK, "insufficient_trust"
    if not is_payment:
        return Action.DELIVER, "probation" if tier is Tier.PROBATION else "trust_sufficient"
    if tier is Tier.PROBATION:
        return Action.BLOCK, "payment_trust_threshold"
    if amount_minor is None:
        # A `payment` kind without an intent names no amount, so no cap can vouch for it.
        return Action.ESCALATE, "payment_amount_missing"
    caps = policy.caps
    per_message, per_day = (
        (caps.trusted_per_message, caps.trusted_per_day)
        if tier is Tier.TRUSTED
        else (caps.established_per_message, caps.established_per_day)
    )
    if amount_minor > to_minor(per_message, currency):
        return Action.ESCALATE, "payment_cap_exceeded"
    if spent_minor + amount_minor > to_minor(per_day, currency):
        return Action.ESCALATE, "daily_cap_exceeded"
    return Action.DELIVER, "payment_within_caps"
