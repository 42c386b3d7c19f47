"""Pure trust scoring: gates, five dimensions, composite, tiers. No I/O, no clock reads."""

from __future__ import annotations

from broker.core.decision import Action, Decision, Tier
from broker.core.envelope import DecodedEnvelope, Envelope, signature_valid
from broker.core.policy import Policy
from broker.core.scoring.base import DimensionScore
from broker.core.scoring.behavioral import score_behavioral, under_observation
from broker.core.scoring.compliance import score_compliance
from broker.core.scoring.gates import first_failed_gate
from broker.core.scoring.identity import identity_verified, score_identity
from broker.core.scoring.reputation import score_reputation
from broker.core.scoring.stake import score_stake
from broker.core.scoring.tiers import (
    REMEDIATION,
    capped_tier,
    composite,
    payments_held,
    route,
    weakest_dimension,
)
from broker.core.state import TrustContext
from broker.errors import EnvelopeError

__all__ = [
    "DimensionScore",
    "blocked",
    "decide",
    "identity_verified",
    "reject_undecodable",
    "reporter_standing",
    "score_dimensions",
    "under_observation",
]

_SCORERS = {
    "identity": score_identity,
    "reputation": score_reputation,
    "compliance": score_compliance,
    "behavioral": score_behavioral,
    "stake": score_stake,
}

_GATE_REMEDIATION = "the sender must fix the message; see the reason code"


def score_dimensions(
    env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int
) -> dict[str, DimensionScore]:
    """All five dimension scores for one message."""
    return {name: scorer(env, ctx, policy, now_ms) for name, scorer in _SCORERS.items()}


def decide(
    decoded: DecodedEnvelope,
    ctx: TrustContext,
    policy: Policy,
    now_ms: int,
    *,
    signature_ok: bool | None = None,
) -> Decision:
    """Gates, then the five dimensions, then tier and action. Verifies the signature
    unless the caller already did (`signature_ok`)."""
    env = decoded.envelope
    if signature_ok is None:
        signature_ok = signature_valid(decoded)
    failed = first_failed_gate(env, signature_ok, ctx, policy, now_ms)
    if failed is not None:
        return blocked(*failed, policy)
    scored = score_dimensions(env, ctx, policy, now_ms)
    scores = {name: result.score for name, result in scored.items()}
    total = composite(scores, policy)
    verified = identity_verified(ctx, now_ms)
    tier, capped = capped_tier(total, policy, identity_verified=verified)
    action, route_reason = route(env, tier, ctx, policy, now_ms, scores["reputation"])
    # Without a verified identity nothing else helps: say so, whatever scores lowest.
    weakest = "identity" if capped else weakest_dimension(scores, policy)
    reasons = (
        str(capped or route_reason),  # plain text (see Decision)
        *(r for result in scored.values() for r in result.reasons),
    )
    remediation = (
        "none needed"
        if action is Action.DELIVER and tier is not Tier.PROBATION
        else (REMEDIATION[weakest])
    )
    return Decision(
        action, tier, total, scores, weakest, reasons, remediation, policy.version,
        identity_verified=verified, payment_hold=payments_held(ctx, now_ms),
    )  # fmt: skip


def reporter_standing(env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int) -> float:
    """What a reporter's word rests on: its own non-report evidence alone (identity,
    behaviour and stake, weighted as in the composite and renormalised), 0 without an
    issuer-verified identity or while under observation. Reputation, the one dimension
    reports move, is left out, so reporters cannot raise each other's voices."""
    if ctx.peer.revoked or not identity_verified(ctx, now_ms):
        return 0.0
    if under_observation(ctx.peer, policy, now_ms):
        return 0.0
    weights = policy.weights
    parts = (
        (weights.identity, score_identity(env, ctx, policy, now_ms).score),
        (weights.behavioral, score_behavioral(env, ctx, policy, now_ms).score),
        (weights.stake, score_stake(env, ctx, policy, now_ms).score),
    )
    total = sum(weight for weight, _ in parts)
    return 0.0 if total <= 0 else sum(weight * score for weight, score in parts) / total


def blocked(code: str, explanation: str, policy: Policy) -> Decision:
    """A block decided before (or instead of) scoring, with its own reason code."""
    code = str(code)  # plain text (see Decision)
    return Decision(
        Action.BLOCK, Tier.BLOCKED, None, {}, None, (code,),
        f"{explanation}; {_GATE_REMEDIATION}", policy.version, gate=code,
    )  # fmt: skip


def reject_undecodable(error: EnvelopeError, policy: Policy) -> Decision:
    """The decision for bytes that never became an envelope (malformed or oversized)."""
    return blocked(error.code, str(error), policy)
