"""Pure trust scoring: gates, five dimensions, composite, tiers. No I/O, no clock reads."""

from __future__ import annotations

from broker.decision import Action, Decision, Tier
from broker.envelope import DecodedEnvelope, Envelope, signature_valid
from broker.errors import EnvelopeError
from broker.policy import Policy
from broker.scoring.base import DimensionScore
from broker.scoring.behavioral import score_behavioral, under_observation
from broker.scoring.compliance import score_compliance
from broker.scoring.gates import first_failed_gate
from broker.scoring.identity import score_identity
from broker.scoring.reputation import score_reputation
from broker.scoring.stake import score_stake
from broker.scoring.tiers import REMEDIATION, composite, route, tier_of, weakest_dimension
from broker.state import TrustContext

__all__ = [
    "DimensionScore",
    "blocked",
    "decide",
    "reject_undecodable",
    "score_dimensions",
    "sender_composite",
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
    tier = tier_of(total, policy)
    action, route_reason = route(env, tier, ctx, policy)
    weakest = weakest_dimension(scores, policy)
    reasons = (route_reason, *(r for result in scored.values() for r in result.reasons))
    remediation = (
        "none needed"
        if action is Action.DELIVER and tier is not Tier.PROBATION
        else (REMEDIATION[weakest])
    )
    return Decision(action, tier, total, scores, weakest, reasons, remediation, policy.version)


def sender_composite(env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int) -> float:
    """The sender's composite for this message, whether or not a gate blocked it."""
    scored = score_dimensions(env, ctx, policy, now_ms)
    return composite({name: result.score for name, result in scored.items()}, policy)


def blocked(code: str, explanation: str, policy: Policy) -> Decision:
    """A block decided before (or instead of) scoring, with its own reason code."""
    return Decision(
        Action.BLOCK, Tier.BLOCKED, None, {}, None, (code,),
        f"{explanation}; {_GATE_REMEDIATION}", policy.version, gate=code,
    )  # fmt: skip


def reject_undecodable(error: EnvelopeError, policy: Policy) -> Decision:
    """The decision for bytes that never became an envelope (malformed or oversized)."""
    return blocked(error.code, str(error), policy)
