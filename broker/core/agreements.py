"""Documents agents present during negotiation: what each must say and who must sign it,
checked in pure code (broker/router/agreements.py records what passes).

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
from typing import Any

from broker.core.envelope import MESSAGE_KINDS
from broker.core.identity import AgentKey, public_key_from_did
from broker.core.policy import RETENTION_ORDER
from broker.core.signing import countersign, sign_document, signed_by
from broker.core.state import PactTerms, Vouch
from broker.errors import EvidenceError, IdentityError

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


def malformed(message: str) -> EvidenceError:
    """The error for a document that does not have the shape its type requires."""
    return EvidenceError(message, code="evidence_malformed")


def required(document: dict[str, Any], name: str, kind: type) -> Any:
    """`document[name]`, refused unless it is a `kind` (a bool is no int)."""
    value = document.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise malformed(f"field {name!r} must be {kind.__name__}")
    return value


def _did(document: dict[str, Any], name: str) -> str:
    value = required(document, name, str)
    try:
        public_key_from_did(value)
    except IdentityError as exc:
        raise EvidenceError(str(exc), code="evidence_malformed") from exc
    return str(value)


def _validity(document: dict[str, Any], now_ms: int) -> None:
    issued = required(document, "issued_at", int)
    expires = required(document, "expires_at", int)
    if expires <= issued:
        raise malformed("expires_at must be after issued_at")
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
        raise malformed(f"{first} and {second} must be different agents")
    _validity(document, now_ms)
    return a, b


def _strings(value: Any, name: str, allowed: frozenset[str] | None = None) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise malformed(f"{name} must be a list of strings")
    items = frozenset(value)
    if allowed is not None and not items <= allowed:
        unknown = sorted(items - allowed)[0]
        raise malformed(f"{name}: unknown value {unknown!r}")
    return items


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
        raise malformed("accepts must be an object")
    return {
        "id": str(required(document, "id", str)),
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
        raise malformed("iatp must be a CapabilityManifest object")
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


def narrowed(
    current: frozenset[str] | None, declared: frozenset[str] | None
) -> frozenset[str] | None:
    """What a declaration may leave of `current`: only ever less (None: anything)."""
    if current is None:
        return declared
    return current if declared is None else current & declared


def verify_pact(document: dict[str, Any], now_ms: int) -> PactTerms:
    """Check a pact signed by both parties; return its terms."""
    sender, recipient = _two_parties(document, PACT_TYPE, "sender", "recipient", now_ms)
    if document.get("monitoring") not in MONITORING_TERMS:
        raise EvidenceError(
            "monitoring must be full, metadata or hashes", code="evidence_malformed"
        )
    currency = document.get("currency")
    if currency is not None and not isinstance(currency, str):
        raise malformed("currency must be a string")
    if not signed_by(document, sender):
        raise EvidenceError("pact is not signed by the sender", code="evidence_bad_signature")
    if not signed_by(document, recipient, field="recipient_signature"):
        raise EvidenceError("pact is not signed by the recipient", code="evidence_bad_signature")
    return PactTerms(
        pact_id=str(required(document, "id", str)),
        sender=sender,
        recipient=recipient,
        kinds=_strings(document.get("kinds"), "kinds", MESSAGE_KINDS),
        data_classes=_strings(document.get("data_classes", []), "data_classes"),
        max_payment_minor=int(required(document, "max_payment_minor", int)),
        currency=currency,
        expires_at_ms=int(document["expires_at"]),
    )


def verify_rotation(document: dict[str, Any], now_ms: int) -> tuple[str, str]:
    """Check a rotation signed by the old key and by the new key; return (old, new)."""
    old, new = _two_parties(document, ROTATION_TYPE, "old", "new", now_ms)
    if not signed_by(document, old):
        raise EvidenceError("rotation is not signed by the old key", code="evidence_bad_signature")
    if not signed_by(document, new, field="new_signature"):
        raise EvidenceError("rotation is not signed by the new key", code="evidence_bad_signature")
    return old, new


def verify_vouch(document: dict[str, Any], now_ms: int) -> tuple[str, Vouch]:
    """Check a vouch signed by the voucher; return (vouchee, vouch)."""
    voucher, vouchee = _two_parties(document, VOUCH_TYPE, "voucher", "vouchee", now_ms)
    share = document.get("share")
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0 < share <= 1:
        raise malformed("share must be a number in (0, 1]")
    if not signed_by(document, voucher):
        raise EvidenceError("vouch is not signed by the voucher", code="evidence_bad_signature")
    return vouchee, Vouch(voucher, float(share), int(document["expires_at"]))


def make_vouch(
    voucher: AgentKey, vouchee: str, *, share: float, now_ms: int, ttl_ms: int
) -> dict[str, Any]:
    """A vouch signed by `voucher`."""
    document = {
        "type": VOUCH_TYPE, "id": f"vouch-{uuid.uuid4().hex}", "voucher": voucher.did,
        "vouchee": vouchee, "share": share, "issued_at": now_ms, "expires_at": now_ms + ttl_ms,
    }  # fmt: skip
    return sign_document(voucher, document)


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
