"""The result type every dimension returns."""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.state import IssuerRole, TrustContext


@dataclass(frozen=True, slots=True)
class DimensionScore:
    """A score in [0, 1] with machine-readable reason codes."""

    score: float
    reasons: tuple[str, ...] = ()


def evidence_problem(
    kind: str,
    issuer: str,
    role: IssuerRole,
    evidence_id: str,
    valid: tuple[int, int],
    ctx: TrustContext,
    now_ms: int,
) -> str | None:
    """Why stored evidence does not count now, re-checked on every decision: its issuer
    must be trusted for `role`, it must not be revoked, and `now_ms` must lie within
    `valid` (issued_at, expires_at). Reason codes are `<kind>_issuer_untrusted`,
    `<kind>_revoked` and `<kind>_expired`."""
    if not ctx.issuers.trusts(issuer, role):
        return f"{kind}_issuer_untrusted"
    if evidence_id in ctx.revoked_evidence:
        return f"{kind}_revoked"
    issued_at, expires_at = valid
    if not issued_at <= now_ms < expires_at:
        return f"{kind}_expired"
    return None
