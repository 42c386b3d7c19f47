"""What `trust-broker peer DID` (ops) and `trust-broker standing` (the agent itself) show:
a peer's scores for a message from it, and what the router would do with that message."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import ValidationError

from broker.core.decision import Action
from broker.core.envelope import MESSAGE_KINDS, Envelope, MessageKind, PaymentIntent
from broker.core.handshake import error_reply, requesting_agent
from broker.core.scoring import identity_verified, score_dimensions
from broker.core.scoring.tiers import REMEDIATION, capped_tier, composite, route, weakest_dimension
from broker.core.state import Attestation, Bond, Credential, ImportedRecord, IssuerRole
from broker.store.base import Globals
from broker.store.redis import RedisStore

# A placeholder recipient: compliance is judged without any particular recipient's rules.
_PROBE_RECIPIENT = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"


async def describe_peer(
    store: RedisStore,
    did: str,
    now_ms: int,
    *,
    kind: MessageKind = "data",
    payment: PaymentIntent | None = None,
) -> dict[str, Any]:
    """Dimension scores, reasons, composite and tier of `did` under the current policy,
    and what the router would do with a message of `kind` (and `payment`) from it now.
    Recipient gates (privacy, pacts, unknown recipients) are not judged: no recipient
    is named."""
    policy = await store.load_policy()
    probe = Envelope.model_construct(
        version=1, id="peer-probe", sender=did, recipient=_PROBE_RECIPIENT, kind=kind,
        created_at=now_ms, nonce="0" * 32, expires_at=None, payment=payment, data_classes=(),
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
    action, because = route(probe, tier, probe_ctx, policy, now_ms, scores["reputation"])
    because = capped or because
    if probe_ctx.peer.revoked:
        action, because = Action.BLOCK, "revoked_key"
    return {
        "did": did,
        "composite": total,
        "tier": "revoked" if probe_ctx.peer.revoked else tier.value,
        "dimensions": scores,
        "reasons": {name: list(result.reasons) for name, result in scored.items()},
        "weakest": weakest,
        "remediation": REMEDIATION[weakest],
        "policy_version": policy.version,
        "thresholds": policy.thresholds.model_dump(),
        "weights": policy.weights.as_dict(),
        "kind": kind,
        "payment": None if payment is None else payment.model_dump(exclude_none=True),
        "action": action.value,
        "action_reason": because,
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
        "manifest": None
        if peer.manifest is None
        else {
            **asdict(peer.manifest),
            "kinds": sorted(peer.manifest.kinds),
            "standing": "valid" if now_ms < peer.manifest.expires_at_ms else "expired",
        },
        "pacts_as_sender": await store.pacts_from(did),
        "imported": [_imported_view(record, shared, now_ms) for record in peer.imported],
    }


def _imported_view(record: ImportedRecord, shared: Globals, now_ms: int) -> dict[str, Any]:
    """An imported trust record (another broker's) and whether it counts now."""
    if record.credential_id in shared.revoked_evidence:
        standing = "revoked"
    elif not shared.issuers.trusts(record.issuer, IssuerRole.FEDERATION):
        standing = "issuer not trusted for federation"
    elif record.valid_from_ms <= now_ms < record.valid_until_ms:
        standing = "valid"
    else:
        standing = "expired"
    return {**asdict(record), "standing": standing}


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


# One standing request per agent per this interval: each costs a few Redis reads.
STANDING_INTERVAL_MS = 200


async def standing_request(
    store: RedisStore, request: dict[str, Any], now_ms: int, user_id: str | None
) -> dict[str, Any]:
    """Answer an agent's `standing` request on trust.handshake. Only the agent itself is
    told: the request must come from the AMQP login named after its DID (RabbitMQ
    validates the user_id property against the login that publishes)."""
    agent = requesting_agent(request, user_id)
    if agent is None:
        return error_reply(
            "standing_unauthenticated",
            "a peer's standing is told only to the peer itself: publish with the AMQP login "
            "named after its DID, with user_id set to it",
        )
    kind = request.get("kind", "data")
    if kind not in MESSAGE_KINDS:
        return error_reply("malformed", f"kind must be one of {sorted(MESSAGE_KINDS)}")
    try:
        payment = (
            None
            if request.get("payment") is None
            else PaymentIntent.model_validate(request["payment"])
        )
    except ValidationError as exc:
        return error_reply("malformed", f"payment: {exc.errors()[0]['msg']}")
    if not await store.try_lock(f"standing:{agent}", STANDING_INTERVAL_MS):
        return error_reply("standing_busy", f"one standing request per {STANDING_INTERVAL_MS} ms")
    view = await describe_peer(store, agent, now_ms, kind=kind, payment=payment)
    return {"op": "standing", "standing": view}
