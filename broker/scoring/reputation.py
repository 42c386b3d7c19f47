"""Reputation: verified outcomes, decayed by elapsed time, with diminishing returns.

Successes saturate towards a ceiling below 1 (the rest is earned through identity and
stake); each verified failure multiplies the score by 0.85. Both evidence counts decay by
wall-clock time, not per event, so the result is the same however often a peer is seen.
Failures decay three times slower than successes: trust is lost faster than regained.
"""

from __future__ import annotations

from broker.envelope import Envelope
from broker.policy import Policy
from broker.scoring.base import DimensionScore
from broker.state import TrustContext


def score_reputation(
    env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int
) -> DimensionScore:
    """Score the sender's track record of verified outcomes."""
    model = policy.reputation
    successes = ctx.peer.successes.at(now_ms, model.success_half_life_ms)
    failures = ctx.peer.failures.at(now_ms, model.failure_half_life_ms)
    base = model.prior + (model.ceiling - model.prior) * successes / (
        successes + model.half_saturation
    )
    score = base * model.failure_multiplier**failures
    reasons: list[str] = []
    if successes < 1.0 and failures < 1.0:
        reasons.append("reputation_cold_start")
    if failures >= 0.5:
        reasons.append("reputation_failures")
    return DimensionScore(_clamp(score), tuple(reasons))


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))
