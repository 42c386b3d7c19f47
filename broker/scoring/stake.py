"""Stake: collateral the sender would lose, against what it could cost the recipient."""

from __future__ import annotations

from broker.currency import to_minor
from broker.envelope import Envelope
from broker.policy import Policy
from broker.scoring.base import DimensionScore
from broker.state import TrustContext


def score_stake(env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int) -> DimensionScore:
    """Score the bond against max(full coverage, this payment), capped at 1."""
    bond = ctx.peer.bond
    if bond is None or bond.amount_minor <= 0:
        return DimensionScore(0.0, ("stake_none",))
    if env.payment is not None and env.payment.currency != bond.currency:
        # No exchange rates in the core: a bond only covers exposure in its own currency.
        return DimensionScore(0.0, ("stake_currency_mismatch",))
    required = to_minor(policy.stake.full_coverage, bond.currency)
    if env.payment is not None:
        required = max(required, env.payment.minor_units)
    score = min(1.0, bond.amount_minor / required)
    return DimensionScore(score, () if score >= 1.0 else ("stake_partial",))
