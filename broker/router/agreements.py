"""Documents agents present during negotiation, verified and then recorded.

Agents present documents inside a presentation they sign themselves (`make_presentation`),
so every document is bound to its presenter: an agent may present only documents about
itself (`PARTIES`). Each kind keeps its issuer, issue time and expiry; a newer document of
the same kind about the same agent supersedes an older one, and the older one presented
later is refused (`evidence_superseded`), so nobody can roll a peer back.

- issuer-signed evidence: credential, attestation, bond, slash (broker/core/evidence.py),
  counted only from an issuer trusted for its role;
- capability manifest (stage 2), signed by the agent: what it sends and accepts, its
  retention, reversibility, rate limit, whether it may delegate. The IATP
  CapabilityManifest JSON shape is accepted inside the signed wrapper (`iatp` member).
  Self-declared: it narrows what the agent may do and never raises its score; a declared
  trust level is recorded and never scored;
- pact (stages 4 and 5), signed by both agents: what the sender may send the recipient,
  for how long, and what the flight recorder may keep;
- key rotation, signed by the old key and the new key;
- vouch, signed by the voucher (counted only from an issuer-verified voucher).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from broker.core.envelope import MESSAGE_KINDS
from broker.core.evidence import (
    ROLES,
    EvidenceType,
    attestation_from,
    bond_from,
    credential_from,
    verify_evidence,
)
from broker.core.identity import AgentKey, public_key_from_did
from broker.core.policy import RETENTION_ORDER
from broker.core.signing import countersign, sign_document, signed_by
from broker.core.state import Manifest, PactTerms, Vouch
from broker.errors import EvidenceError, IdentityError
from broker.store.redis import RedisStore

MANIFEST_TYPE = "trust-broker/manifest"
PACT_TYPE = "trust-broker/pact"
ROTATION_TYPE = "trust-broker/rotation"
VOUCH_TYPE = "trust-broker/vouch"
MONITORING_TERMS = ("full", "metadata", "hashes")
REVERSIBILITY = ("full", "partial", "none")


# Which fields of each document type name the agents it is about: only those agents may
# present it. A slash may also be presented by the custodian that issued it.
PARTIES: dict[str, tuple[str, ...]] = {
    "credential": ("subject",),
    "attestation": ("subject",),
    "bond": ("subject",),
    "slash": ("subject", "issuer"),
    "manifest": ("agent",),
    "pact": ("sender", "recipient"),
    "rotation": ("old", "new"),
    "vouch": ("voucher", "vouchee"),
}
OPS = None  # the presenter of documents ops load with direct store access (CLI)


async def apply_document(
    store: RedisStore, document: Any, now_ms: int, presenter: str | None
) -> str:
    """Verify one presented document and record it; return its id.

    `presenter` is the agent whose signed presentation carried the document: it must be
    one of the agents the document is about (`PARTIES`), whatever else the document
    says or omits. `OPS` (None) is ops loading a document with direct store access."""
    if isinstance(document, dict) and isinstance(document.get("type"), list):
        # A W3C Verifiable Credential (trust records, status lists, identity credentials).
        from broker.federation.imports import apply_credential

        return await apply_credential(store, document, now_ms, presenter)
    if not isinstance(document, dict) or not isinstance(document.get("type"), str):
        raise _malformed("a document is a JSON object with a type")
    kind = document["type"].removeprefix("trust-broker/")
    if kind not in PARTIES:
        raise EvidenceError(
            f"unknown document type {document['type']!r}", code="evidence_wrong_type"
        )
    if presenter is not OPS and presenter not in {document.get(f) for f in PARTIES[kind]}:
        raise EvidenceError(
            "the document does not concern the agent presenting it",
            code="evidence_subject_mismatch",
        )
    await _APPLY[kind](store, document, now_ms)
    return str(document.get("id", ""))


async def _apply_credential(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    verified = await _trusted_evidence(store, document, "credential", now_ms)
    _recorded(await store.set_credential(credential_from(verified)))


async def _apply_attestation(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    verified = await _trusted_evidence(store, document, "attestation", now_ms)
    _recorded(await store.set_attestation(attestation_from(verified)))


async def _apply_bond(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    verified = await _trusted_evidence(store, document, "bond", now_ms)
    _recorded(await store.set_bond(verified["subject"], bond_from(verified)))


async def _trusted_evidence(
    store: RedisStore, document: dict[str, Any], kind: EvidenceType, now_ms: int
) -> dict[str, Any]:
    """Verified issuer-signed evidence whose issuer holds the role for its kind now
    (checked again on every decision: the trust list can change)."""
    verified = verify_evidence(document, kind, now_ms)
    role = ROLES[kind]
    if not (await store.globals(now_ms)).issuers.trusts(verified["issuer"], role):
        raise EvidenceError(
            f"the issuer of this {kind} is not on the trust list for {role.value}",
            code="slash_issuer_untrusted" if kind == "slash" else "evidence_issuer_untrusted",
        )
    return verified


def _recorded(outcome: str) -> None:
    """Raise unless the store recorded the document (or already had this very one)."""
    if outcome == "superseded":
        raise EvidenceError(
            "a newer document of this kind about this agent is already recorded",
            code="evidence_superseded",
        )


def _malformed(message: str) -> EvidenceError:
    return EvidenceError(message, code="evidence_malformed")


def _require(document: dict[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _malformed(f"field {name!r} must be {kind.__name__}")
    return value


def _did(document: dict[str, Any], name: str) -> str:
    value = _require(document, name, str)
    try:
        public_key_from_did(value)
    except IdentityError as exc:
        raise EvidenceError(str(exc), code="evidence_malformed") from exc
    return str(value)


def _validity(document: dict[str, Any], now_ms: int) -> None:
    issued = _require(document, "issued_at", int)
    expires = _require(document, "expires_at", int)
    if expires <= issued:
        raise _malformed("expires_at must be after issued_at")
    if issued > now_ms:
        raise EvidenceError("document is issued in the future", code="evidence_not_yet_valid")
    if expires <= now_ms:
        raise EvidenceError("document has expired", code="evidence_expired")


def _two_parties(
    document: dict[str, Any], doc_type: str, first: str, second: str, now_ms: int
) -> tuple[str, str]:
    """Common checks of a two-party document: its type, two different DIDs, validity."""
    if document.get("type") != doc_type:
        raise EvidenceError(
            f"not a {doc_type.removeprefix('trust-broker/')}", code="evidence_wrong_type"
        )
    a, b = _did(document, first), _did(document, second)
    if a == b:
        raise _malformed(f"{first} and {second} must be different agents")
    _validity(document, now_ms)
    return a, b


def _strings(value: Any, name: str, allowed: frozenset[str] | None = None) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _malformed(f"{name} must be a list of strings")
    items = frozenset(value)
    if allowed is not None and not items <= allowed:
        unknown = sorted(items - allowed)[0]
        raise _malformed(f"{name}: unknown value {unknown!r}")
    return items


# -- capability manifest ---------------------------------------------------------------


def verify_manifest(document: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """Check an agent-signed manifest; return it normalised to our fields."""
    if document.get("type") != MANIFEST_TYPE:
        raise EvidenceError("not a manifest", code="evidence_wrong_type")
    agent = _did(document, "agent")
    _validity(document, now_ms)
    if not signed_by(document, agent):
        raise EvidenceError("manifest is not signed by its agent", code="evidence_bad_signature")
    fields = _from_iatp(document["iatp"]) if "iatp" in document else document
    retention = fields.get("retention")
    if retention not in RETENTION_ORDER:
        raise EvidenceError(
            "retention must be ephemeral, temporary or permanent", code="evidence_malformed"
        )
    reversibility = fields.get("reversibility", "none")
    if reversibility not in REVERSIBILITY:
        raise EvidenceError(
            "reversibility must be full, partial or none", code="evidence_malformed"
        )
    accepts = fields.get("accepts", {})
    if not isinstance(accepts, dict):
        raise _malformed("accepts must be an object")
    return {
        "id": str(_require(document, "id", str)),
        "agent": agent,
        "issued_at": document["issued_at"],
        "expires_at": document["expires_at"],
        "kinds": _strings(fields.get("kinds", []), "kinds", MESSAGE_KINDS),
        "accept_kinds": _optional_set(accepts.get("kinds"), "accepts.kinds", MESSAGE_KINDS),
        "accept_classes": _optional_set(accepts.get("data_classes"), "accepts.data_classes"),
        "retention": retention,
        "reversibility": reversibility,
        "declared_trust_level": fields.get("trust_level"),
    }


def _optional_set(
    value: Any, name: str, allowed: frozenset[str] | None = None
) -> frozenset[str] | None:
    return None if value is None else _strings(value, name, allowed)


def _from_iatp(iatp: Any) -> dict[str, Any]:
    """Map an IATP CapabilityManifest onto our manifest fields."""
    if not isinstance(iatp, dict):
        raise _malformed("iatp must be a CapabilityManifest object")
    privacy = iatp.get("privacy_contract") or {}
    capabilities = iatp.get("capabilities") or {}
    scopes = iatp.get("scopes") or []
    kinds = [scope.split(":", 1)[-1] for scope in scopes if isinstance(scope, str)]
    return {
        "retention": str(privacy.get("retention", "permanent")).lower(),
        "reversibility": str(
            capabilities.get("reversibility", iatp.get("reversibility", "none"))
        ).lower(),
        "kinds": [kind for kind in kinds if kind in MESSAGE_KINDS],
        "trust_level": iatp.get("trust_level"),
    }


async def _apply_manifest(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    manifest = verify_manifest(document, now_ms)
    declared = Manifest(
        manifest["id"], manifest["kinds"], manifest["issued_at"], manifest["expires_at"]
    )
    _recorded(await store.set_manifest(manifest["agent"], declared))
    if manifest["declared_trust_level"] is not None:
        await store.record_declared_trust(manifest["agent"], str(manifest["declared_trust_level"]))
    profile = await store.recipient(manifest["agent"], now_ms)
    if profile is None:
        return  # not provisioned as a recipient: the manifest only describes what it sends
    # A manifest may only make the profile stricter: the longer retention of what ops
    # provisioned and what the agent declares, and the intersection of what it accepts.
    retention = max(profile.retention, manifest["retention"], key=RETENTION_ORDER.__getitem__)
    await store.register_recipient(
        replace(
            profile,
            retention=retention,
            accepted_kinds=_narrow(profile.accepted_kinds, manifest["accept_kinds"]),
            accepted_data_classes=_narrow(
                profile.accepted_data_classes, manifest["accept_classes"]
            ),
        )
    )


def _narrow(
    current: frozenset[str] | None, declared: frozenset[str] | None
) -> frozenset[str] | None:
    if current is None:
        return declared
    return current if declared is None else current & declared


# -- pacts -----------------------------------------------------------------------------


def verify_pact(document: dict[str, Any], now_ms: int) -> PactTerms:
    """Check a pact signed by both parties; return its terms."""
    sender, recipient = _two_parties(document, PACT_TYPE, "sender", "recipient", now_ms)
    if document.get("monitoring") not in MONITORING_TERMS:
        raise EvidenceError(
            "monitoring must be full, metadata or hashes", code="evidence_malformed"
        )
    currency = document.get("currency")
    if currency is not None and not isinstance(currency, str):
        raise _malformed("currency must be a string")
    if not signed_by(document, sender):
        raise EvidenceError("pact is not signed by the sender", code="evidence_bad_signature")
    if not signed_by(document, recipient, field="recipient_signature"):
        raise EvidenceError("pact is not signed by the recipient", code="evidence_bad_signature")
    return PactTerms(
        pact_id=str(_require(document, "id", str)),
        sender=sender,
        recipient=recipient,
        kinds=_strings(document.get("kinds"), "kinds", MESSAGE_KINDS),
        data_classes=_strings(document.get("data_classes", []), "data_classes"),
        max_payment_minor=int(_require(document, "max_payment_minor", int)),
        currency=currency,
        expires_at_ms=int(document["expires_at"]),
    )


# -- key rotation ----------------------------------------------------------------------


def verify_rotation(document: dict[str, Any], now_ms: int) -> tuple[str, str]:
    """Check a rotation signed by the old key and by the new key; return (old, new)."""
    old, new = _two_parties(document, ROTATION_TYPE, "old", "new", now_ms)
    if not signed_by(document, old):
        raise EvidenceError("rotation is not signed by the old key", code="evidence_bad_signature")
    if not signed_by(document, new, field="new_signature"):
        raise EvidenceError("rotation is not signed by the new key", code="evidence_bad_signature")
    return old, new


async def _apply_rotation(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    old, new = verify_rotation(document, now_ms)
    outcome = await store.rotate_key(old, new)
    if outcome == "old_revoked":
        raise EvidenceError("the old key is revoked: it cannot hand over", code="rotation_revoked")
    if outcome == "new_in_use":
        # Carrying history into a key that already has its own would merge two identities.
        raise EvidenceError("the new key already has history", code="rotation_target_in_use")


# -- vouching and slashing ------------------------------------------------------------


def verify_vouch(document: dict[str, Any], now_ms: int) -> tuple[str, Vouch]:
    """Check a vouch signed by the voucher; return (vouchee, vouch)."""
    voucher, vouchee = _two_parties(document, VOUCH_TYPE, "voucher", "vouchee", now_ms)
    share = document.get("share")
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0 < share <= 1:
        raise _malformed("share must be a number in (0, 1]")
    if not signed_by(document, voucher):
        raise EvidenceError("vouch is not signed by the voucher", code="evidence_bad_signature")
    return vouchee, Vouch(voucher, float(share), int(document["expires_at"]))


async def _apply_vouch(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    vouchee, vouch = verify_vouch(document, now_ms)
    issued = (int(document["issued_at"]), str(_require(document, "id", str)))
    _recorded(await store.add_vouch(vouchee, vouch, issued=issued))


async def _apply_pact(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    terms = verify_pact(document, now_ms)
    _recorded(await store.set_pact(terms, document, issued_at_ms=int(document["issued_at"])))


async def _apply_slash(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    # Slashing takes collateral away: only a custodian (role stake) may order it.
    verified = await _trusted_evidence(store, document, "slash", now_ms)
    if not await store.mark_once(f"slash:{verified['id']}"):
        raise EvidenceError("this slash was already applied", code="slash_duplicate")
    await store.slash_bond(verified["subject"], amount_minor=int(verified["amount_minor"]))


_APPLY: dict[str, Callable[[RedisStore, dict[str, Any], int], Awaitable[None]]] = {
    "credential": _apply_credential,
    "attestation": _apply_attestation,
    "bond": _apply_bond,
    "slash": _apply_slash,
    "manifest": _apply_manifest,
    "pact": _apply_pact,
    "rotation": _apply_rotation,
    "vouch": _apply_vouch,
}


def make_vouch(
    voucher: AgentKey, vouchee: str, *, share: float, now_ms: int, ttl_ms: int
) -> dict[str, Any]:
    """A vouch signed by `voucher`."""
    document = {
        "type": VOUCH_TYPE, "id": f"vouch-{uuid.uuid4().hex}", "voucher": voucher.did,
        "vouchee": vouchee, "share": share, "issued_at": now_ms, "expires_at": now_ms + ttl_ms,
    }  # fmt: skip
    return sign_document(voucher, document)


# -- builders (what agents sign) -------------------------------------------------------


def make_manifest(
    agent: AgentKey,
    *,
    now_ms: int,
    ttl_ms: int,
    kinds: list[str],
    retention: str,
    accepts: dict[str, list[str]] | None = None,
    reversibility: str = "none",
    rate_limit_per_minute: int = 600,
    may_delegate: bool = False,
    iatp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A capability manifest signed by `agent` (or an IATP manifest wrapped and signed)."""
    document: dict[str, Any] = {
        "type": MANIFEST_TYPE, "id": f"manifest-{uuid.uuid4().hex}", "agent": agent.did,
        "issued_at": now_ms, "expires_at": now_ms + ttl_ms,
    }  # fmt: skip
    if iatp is not None:
        document["iatp"] = iatp
    else:
        document.update(
            kinds=kinds, retention=retention, reversibility=reversibility,
            rate_limit_per_minute=rate_limit_per_minute, may_delegate=may_delegate,
        )  # fmt: skip
        if accepts is not None:
            document["accepts"] = accepts
    return sign_document(agent, document)


def make_pact(
    sender: AgentKey,
    recipient: str,
    *,
    now_ms: int,
    ttl_ms: int,
    kinds: list[str],
    data_classes: list[str] | None = None,
    max_payment_minor: int = 0,
    currency: str | None = None,
    monitoring: str = "metadata",
) -> dict[str, Any]:
    """A pact proposed and signed by `sender`; the recipient adds `recipient_signature`
    with broker.core.signing.countersign(key, pact, "recipient_signature")."""
    document: dict[str, Any] = {
        "type": PACT_TYPE, "id": f"pact-{uuid.uuid4().hex}", "sender": sender.did,
        "recipient": recipient, "kinds": kinds, "data_classes": data_classes or [],
        "max_payment_minor": max_payment_minor, "monitoring": monitoring,
        "issued_at": now_ms, "expires_at": now_ms + ttl_ms,
    }  # fmt: skip
    if currency is not None:
        document["currency"] = currency
    return sign_document(sender, document)


def make_rotation(
    old: AgentKey, new: AgentKey, *, now_ms: int, ttl_ms: int = 600_000
) -> dict[str, Any]:
    """A key rotation signed by the old key and by the new key."""
    document = {
        "type": ROTATION_TYPE, "id": f"rotation-{uuid.uuid4().hex}", "old": old.did,
        "new": new.did, "issued_at": now_ms, "expires_at": now_ms + ttl_ms,
    }  # fmt: skip
    return countersign(new, sign_document(old, document), "new_signature")
