"""Reputation: verified outcomes, decayed by elapsed time, with diminishing returns.

Successes saturate towards a ceiling below 1 (the rest is earned through identity and
stake); each verified failure unit multiplies the score by 0.85, weighed against the
peer's verified successes: for a peer without any, a failure costs the full 15 % (the
seeds' "trust drops 15 % on verified failure"), for one with a long record it costs less,
so an agent failing 2 % of a busy workload keeps its standing while one that mostly fails
loses it. Both evidence counts decay by wall-clock time, not per event, so the result is
the same however often a peer is seen. Failures decay three times slower than successes:
trust is lost faster than regained.

A vouch lends the vouchee a bounded share of what the voucher earned itself above the
cold-start prior. Only the voucher's own outcomes count, never what others vouched for it,
so rings of vouchers and fresh identities lend nothing.

A first-time peer may bring records other brokers issued about it (broker/core/scoring/
prior.py): they replace the cold-start prior, bounded by `federation.ceiling`, and fade as
local outcomes accumulate.
"""

from __future__ import annotations

from broker.core.envelope import Envelope
from broker.core.policy import Policy
from broker.core.reports import domain_of
from broker.core.scoring.base import DimensionScore
from broker.core.scoring.earned import earned, failure_penalty
from broker.core.scoring.identity import credential_problem
from broker.core.scoring.prior import blend, imported_prior
from broker.core.state import TrustContext, Vouch


def score_reputation(
    env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int
) -> DimensionScore:
    """Score the sender's track record of verified outcomes (plus vouches)."""
    model = policy.reputation
    peer = ctx.peer
    successes = peer.successes.at(now_ms, model.success_half_life_ms)
    failures = peer.failures.at(now_ms, model.failure_half_life_ms)
    score = earned(peer.successes, peer.failures, model, now_ms)
    reasons: list[str] = []
    prior = imported_prior(ctx, policy, now_ms)
    if prior is not None:
        score = blend(prior, score, successes + failures, policy)
        reasons.append("reputation_imported_prior")
    elif successes < 1.0 and failures < 1.0:
        reasons.append("reputation_cold_start")
    if failures >= 0.5:
        reasons.append("reputation_failures")
    domain = peer.domain_failures.get(domain_of(env))
    if domain is not None:
        domain_units = domain.at(now_ms, model.failure_half_life_ms)
        score *= failure_penalty(domain_units, successes, model)
        if domain_units >= 0.5:
            reasons.append(f"reputation_{domain_of(env)}_failures")
    boost = vouch_boost(peer.vouches, ctx, policy, now_ms)
    if boost > 0:
        score = max(score, min(model.ceiling, score + boost))
        reasons.append("vouched")
    return DimensionScore(min(1.0, max(0.0, score)), tuple(reasons))


def vouch_boost(
    vouches: tuple[Vouch, ...], ctx: TrustContext, policy: Policy, now_ms: int
) -> float:
    """What valid vouches lend: share x (voucher's earned reputation - prior), bounded."""
    rules = policy.vouching
    model = policy.reputation
    total = 0.0
    for vouch in vouches:
        if vouch.expires_at_ms <= now_ms or vouch.voucher_revoked:
            continue
        if vouch.voucher == ctx.peer.did:
            continue  # nobody vouches for itself
        if credential_problem(vouch.voucher_credential, vouch.voucher, ctx, now_ms) is not None:
            continue  # only issuer-verified peers can vouch
        standing = earned(vouch.voucher_successes, vouch.voucher_failures, model, now_ms)
        if standing < rules.min_voucher_reputation:
            continue
        total += min(vouch.share, rules.max_share) * (standing - model.prior)
    return min(total, rules.max_boost)
