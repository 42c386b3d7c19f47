"""Identity: how strongly the sender's identity is backed by checkable evidence.

A valid envelope signature alone is self-attestation: anyone can mint a did:key. Proof of
key possession comes from the broker's challenge handshake; "verified" also needs a
credential from an issuer trusted for identity; "attested" adds a current code
attestation from an issuer trusted for attestations. After a behavioural anomaly,
possession must be proven again. A key that is not issuer-verified never leaves the
blocked tier, whatever else it presents (see `identity_verified`).
"""

from __future__ import annotations

from broker.core.envelope import Envelope
from broker.core.policy import Policy
from broker.core.scoring.base import DimensionScore, evidence_problem
from broker.core.state import Attestation, Credential, IssuerRole, PeerState, TrustContext


def score_identity(env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int) -> DimensionScore:
    """Score the sender's identity evidence."""
    levels = policy.identity
    peer = ctx.peer
    possession = _possession_current(peer, now_ms)
    cred_problem = credential_problem(peer.credential, peer.did, ctx, now_ms)
    if not possession:
        reasons = ["identity_unverified"]
        if cred_problem is None:
            # A credential cannot stand in for a live proof that the sender holds the key.
            reasons.append("possession_required")
        return DimensionScore(levels.unverified, tuple(reasons))
    if cred_problem is not None:
        return DimensionScore(levels.possession, ("identity_possession", cred_problem))
    attestation_problem = _attestation_problem(peer.attestation, peer, ctx, now_ms)
    if attestation_problem is None:
        return DimensionScore(levels.attested, ("identity_attested",))
    return DimensionScore(levels.verified, ("identity_verified", attestation_problem))


def identity_verified(ctx: TrustContext, now_ms: int) -> bool:
    """A live proof of possession and a valid credential from an identity issuer: the
    least a peer needs to leave the blocked tier, vouch, or have its reports count."""
    peer = ctx.peer
    return _possession_current(peer, now_ms) and (
        credential_problem(peer.credential, peer.did, ctx, now_ms) is None
    )


def _possession_current(peer: PeerState, now_ms: int) -> bool:
    if peer.possession_verified_ms is None or peer.possession_expires_ms is None:
        return False
    if peer.possession_expires_ms <= now_ms:
        return False
    # An anomaly voids earlier proofs: the peer must re-verify (the seeds' "must re-verify").
    return peer.last_anomaly_ms is None or peer.possession_verified_ms > peer.last_anomaly_ms


def credential_problem(
    cred: Credential | None, subject: str, ctx: TrustContext, now_ms: int
) -> str | None:
    """Why `cred` does not verify `subject` now (None when it does)."""
    if cred is None:
        return "credential_missing"
    if cred.subject != subject or cred.issuer == cred.subject:
        return "credential_subject_mismatch"
    return evidence_problem(
        "credential", cred.issuer, IssuerRole.IDENTITY, cred.credential_id,
        (cred.issued_at_ms, cred.expires_at_ms), ctx, now_ms,
    )  # fmt: skip


def _attestation_problem(
    att: Attestation | None, peer: PeerState, ctx: TrustContext, now_ms: int
) -> str | None:
    if att is None:
        return "attestation_missing"
    if att.subject != peer.did or att.issuer == att.subject:
        return "attestation_untrusted"
    problem = evidence_problem(
        "attestation", att.issuer, IssuerRole.ATTESTATION, att.attestation_id,
        (att.issued_at_ms, att.expires_at_ms), ctx, now_ms,
    )  # fmt: skip
    if problem == "attestation_issuer_untrusted":
        return "attestation_untrusted"
    if problem is not None:
        return problem
    if peer.expected_codebase_hash is not None and att.codebase_hash != peer.expected_codebase_hash:
        return "attestation_mismatch"
    return None
