"""What `trust-broker peer DID` shows: scores for an ordinary data message from DID."""

from __future__ import annotations

from typing import Any

from broker.envelope import Envelope
from broker.scoring import score_dimensions
from broker.scoring.tiers import REMEDIATION, composite, tier_of, weakest_dimension
from broker.store.redis import RedisStore

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
    probe_ctx = await store.context(probe, now_ms, replayed=False)
    scored = score_dimensions(probe, probe_ctx, policy, now_ms)
    scores = {name: result.score for name, result in scored.items()}
    total = composite(scores, policy)
    weakest = weakest_dimension(scores, policy)
    return {
        "did": did,
        "composite": total,
        "tier": "revoked" if probe_ctx.peer.revoked else tier_of(total, policy).value,
        "dimensions": scores,
        "reasons": {name: list(result.reasons) for name, result in scored.items()},
        "weakest": weakest,
        "remediation": REMEDIATION[weakest],
        "policy_version": policy.version,
    }
