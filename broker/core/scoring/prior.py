"""Imported trust records as a cold-start reputation prior (pure).

Each record another broker issued is first scored with this deployment's own reputation
model (its successes, and its failures plus `slash_failure_units` per slash), then pulled
towards the local cold-start prior by how little this deployment trusts the issuer and by
the record's age. A bad record (below the prior) keeps its full weight: distrust of the
issuer never softens it. Records combine by their minimum, so several issuers never add
up and any bad one counts, and no record lifts a peer above `federation.ceiling`. The
prior then blends with what the peer earned here with weight
local_weight / (local_weight + local outcomes), so local behaviour soon outweighs it.
"""

from __future__ import annotations

from broker.core.policy import Policy
from broker.core.scoring.earned import earned
from broker.core.state import DecayedCount, ImportedRecord, IssuerRole, TrustContext


def record_value(record: ImportedRecord, policy: Policy, now_ms: int) -> float:
    """What one record is worth here, before the ceiling: in [0, 1]."""
    model, rules = policy.reputation, policy.federation
    failures = record.failures + rules.slash_failure_units * record.slashes
    at = record.valid_from_ms
    raw = earned(DecayedCount(record.successes, at), DecayedCount(failures, at), model, at)
    if raw < model.prior:
        return raw
    age = max(0, now_ms - record.valid_from_ms)
    discount: float = 0.5 ** (age / rules.age_half_life_ms)
    return model.prior + (raw - model.prior) * discount


def counted_records(ctx: TrustContext, now_ms: int) -> list[ImportedRecord]:
    """The imported records that count now: valid, not revoked, from a federation issuer."""
    return [
        record
        for record in ctx.peer.imported
        if record.valid_from_ms <= now_ms < record.valid_until_ms
        and record.credential_id not in ctx.revoked_evidence
        and ctx.issuers.trusts(record.issuer, IssuerRole.FEDERATION)
        and record.issuer != ctx.peer.did
    ]


def imported_prior(ctx: TrustContext, policy: Policy, now_ms: int) -> float | None:
    """The prior the counted records give, or None when none counts."""
    rules, prior = policy.federation, policy.reputation.prior
    values = []
    for record in counted_records(ctx, now_ms):
        value = record_value(record, policy, now_ms)
        if value > prior:
            trust = ctx.issuers.weight(record.issuer, rules.default_trust)
            value = prior + (value - prior) * trust
        values.append(value)
    if not values:
        return None
    return min(min(values), max(rules.ceiling, prior))


def blend(imported: float, local: float, local_outcomes: float, policy: Policy) -> float:
    """The imported prior blended with the locally earned score."""
    weight = policy.federation.local_weight
    share = weight / (weight + max(0.0, local_outcomes))
    return share * imported + (1.0 - share) * local
