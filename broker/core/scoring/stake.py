"""Stake: collateral the sender would lose, against what it could cost the recipient.

Only a bond from a custodian (an issuer trusted for the `stake` role) counts, while it is
unexpired and unrevoked, less what was slashed. Coverage is judged in the policy's
reference currency: the bond is converted at the policy's rate rounding down, a payment
rounding up. A bond in a currency without a rate covers nothing.
"""

from __future__ import annotations

from broker.core.currency import convert_minor, to_minor
from broker.core.envelope import Envelope
from broker.core.policy import CurrencyModel, Policy
from broker.core.scoring.base import DimensionScore, evidence_problem
from broker.core.state import IssuerRole, TrustContext


def score_stake(env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int) -> DimensionScore:
    """Score the bond against max(full coverage, this payment), capped at 1."""
    bond = ctx.peer.bond
    if bond is None or bond.held_minor <= 0:
        return DimensionScore(0.0, ("stake_none",))
    problem = evidence_problem(
        "stake", bond.issuer, IssuerRole.STAKE, bond.bond_id,
        (bond.issued_at_ms, bond.expires_at_ms), ctx, now_ms,
    )  # fmt: skip
    if problem is not None or bond.issuer == ctx.peer.did:
        return DimensionScore(0.0, (problem or "stake_issuer_untrusted",))
    money = policy.currency
    held = reference_minor(bond.held_minor, bond.currency, money, round_up=False)
    if held is None:
        return DimensionScore(0.0, ("stake_currency_unrated",))
    required = to_minor(policy.stake.full_coverage, money.reference)
    if env.payment is not None:
        exposure = reference_minor(
            env.payment.minor_units, env.payment.currency, money, round_up=True
        )
        if exposure is None:
            return DimensionScore(0.0, ("stake_currency_unrated",))
        required = max(required, exposure)
    score = min(1.0, held / required)
    return DimensionScore(score, () if score >= 1.0 else ("stake_partial",))


def reference_minor(
    minor: int, currency: str, money: CurrencyModel, *, round_up: bool
) -> int | None:
    """`minor` units of `currency` in reference minor units, or None without a rate."""
    rate = money.rate(currency)
    if rate is None:
        return None
    return convert_minor(minor, currency, rate, money.reference, round_up=round_up)
