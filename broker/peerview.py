"""What `trust-broker peer DID` shows: scores for an ordinary data message from DID."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from broker.envelope import Envelope
from broker.scoring import identity_verified, score_dimensions
from broker.scoring.tiers import REMEDIATION, capped_tier, composite, weakest_dimension
from broker.state import Attestation, Bond, Credential, IssuerRole
from broker.store.redis import Globals, RedisStore

# A placeholder recipient: compliance is judged without any particular recipient's rules.
_PROBE_RECIPIENT = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"


async def describe_peer(store: RedisStore, did: str, now_ms: int) -> dict[str, Any]:
    """Dimension scores, reasons, composite and tier of `did` under the current policy."""
    policy = await store.load_policy()
    probe = Envelope.model_construct(
        version=1, id="peer-probe", sender=did, recipient=_PROBE_RECIPIENT, kind="data",
        created_at=now_ms, nonce="0" * 32, expires_at=None, payment=None, data_classes=(),
        body=None, signature="",
    )  # fmt: skip
    # Admin reads go to Redis, not this process's cache: show what every router will see.
    probe_ctx = await store.context(probe, now_ms, replayed=False, cached=False)
    scored = score_dimensions(probe, probe_ctx, policy, now_ms)
    scores = {name: result.score for name, result in scored.items()}
    total = composite(scores, policy)
    verified = identity_verified(probe_ctx, now_ms)
    tier, capped = capped_tier(total, policy, identity_verified=verified)
    weakest = "identity" if capped else weakest_dimension(scores, policy)
    return {
        "did": did,
        "composite": total,
        "tier": "revoked" if probe_ctx.peer.revoked else tier.value,
        "dimensions": scores,
        "reasons": {name: list(result.reasons) for name, result in scored.items()},
        "weakest": weakest,
        "remediation": REMEDIATION[weakest],
        "policy_version": policy.version,
    }


async def describe_evidence(store: RedisStore, did: str, now_ms: int) -> dict[str, Any]:
    """What is recorded about `did`: evidence, its standing now, and declared claims."""
    peer = await store.peer(did, now_ms, cached=False)
    shared = await store.globals(now_ms)
    credential = peer.credential
    attestation = peer.attestation
    return {
        "did": did,
        "revoked": peer.revoked,
        "possession": {
            "verified_ms": peer.possession_verified_ms,
            "expires_ms": peer.possession_expires_ms,
            "live": bool(peer.possession_expires_ms and peer.possession_expires_ms > now_ms),
        },
        "credential": credential
        and _view(credential, credential.credential_id, IssuerRole.IDENTITY, shared, now_ms),
        "attestation": attestation
        and _view(attestation, attestation.attestation_id, IssuerRole.ATTESTATION, shared, now_ms),
        "bond": peer.bond and _view(peer.bond, peer.bond.bond_id, IssuerRole.STAKE, shared, now_ms),
        "manifest": None if peer.manifest is None else {
            **asdict(peer.manifest), "kinds": sorted(peer.manifest.kinds),
            "standing": "valid" if now_ms < peer.manifest.expires_at_ms else "expired",
        },
        "pacts_as_sender": await store.pacts_from(did),
    }


def _view(
    item: Credential | Attestation | Bond,
    item_id: str,
    role: IssuerRole,
    shared: Globals,
    now_ms: int,
) -> dict[str, Any]:
    if item_id in shared.revoked_evidence:
        standing = "revoked"
    elif not shared.issuers.trusts(item.issuer, role):
        standing = f"issuer not trusted for {role.value}"
    elif item.issued_at_ms <= now_ms < item.expires_at_ms:
        standing = "valid"
    else:
        standing = "expired"
    return {**asdict(item), "standing": standing}
