"""Identity: how strongly the sender's identity is backed by checkable evidence.

A valid envelope signature alone is self-attestation: anyone can mint a did:key. Proof of
key possession comes from the broker's challenge handshake; "verified" also needs a
credential from an issuer on the deployment's trust list; "attested" adds a current code
attestation. After a behavioural anomaly, possession must be proven again.
"""

from __future__ import annotations

from broker.envelope import Envelope
from broker.policy import Policy
from broker.scoring.base import DimensionScore
from broker.state import Attestation, Credential, PeerState, TrustContext


def score_identity(env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int) -> DimensionScore:
    """Score the sender's identity evidence."""
    levels = policy.identity
    peer = ctx.peer
    possession = _possession_current(peer, now_ms)
    credential_problem = _credential_problem(peer.credential, ctx, now_ms)
    if not possession:
        reasons = ["identity_unverified"]
        if credential_problem is None:
            # A credential cannot stand in for a live proof that the sender holds the key.
            reasons.append("possession_required")
        return DimensionScore(levels.unverified, tuple(reasons))
    if credential_problem is not None:
        return DimensionScore(levels.possession, ("identity_possession", credential_problem))
    attestation_problem = _attestation_problem(peer.attestation, peer, ctx, now_ms)
    if attestation_problem is None:
        return DimensionScore(levels.attested, ("identity_attested",))
    return DimensionScore(levels.verified, ("identity_verified", attestation_problem))


def _possession_current(peer: PeerState, now_ms: int) -> bool:
    if peer.possession_verified_ms is None or peer.possession_expires_ms is None:
        return False
    if peer.possession_expires_ms <= now_ms:
        return False
    # An anomaly voids earlier proofs: the peer must re-verify (the seeds' "must re-verify").
    return peer.last_anomaly_ms is None or peer.possession_verified_ms > peer.last_anomaly_ms


def _credential_problem(cred: Credential | None, ctx: TrustContext, now_ms: int) -> str | None:
    if cred is None:
        return "credential_missing"
    if cred.subject != ctx.peer.did:
        return "credential_subject_mismatch"
    if cred.issuer not in ctx.issuers:
        return "credential_issuer_untrusted"
    if cred.credential_id in ctx.revoked_evidence:
        return "credential_revoked"
    if not cred.issued_at_ms <= now_ms < cred.expires_at_ms:
        return "credential_expired"
    return None


def _attestation_problem(
    att: Attestation | None, peer: PeerState, ctx: TrustContext, now_ms: int
) -> str | None:
    if att is None:
        return "attestation_missing"
    if att.subject != peer.did or att.issuer not in ctx.issuers:
        return "attestation_untrusted"
    if att.attestation_id in ctx.revoked_evidence:
        return "attestation_revoked"
    if not att.issued_at_ms <= now_ms < att.expires_at_ms:
        return "attestation_expired"
    if peer.expected_codebase_hash is not None and att.codebase_hash != peer.expected_codebase_hash:
        return "attestation_mismatch"
    return None
