"""W3C Verifiable Credentials 2.0 secured with eddsa-jcs-2022: issue and check (pure).

A credential counts here only when its proof verifies and was made by the key of its
`issuer` (a did:key), and when it is inside its validity period. `validFrom` and
`validUntil` are required: a trust statement without an expiry cannot be retired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.core.dataintegrity import (
    add_eddsa_jcs_proof,
    did_key_method,
    proof_controller,
    verify_eddsa_jcs_proof,
)
from broker.core.identity import AgentKey, public_key_from_did
from broker.errors import EvidenceError, IdentityError

VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
VC_TYPE = "VerifiableCredential"


@dataclass(frozen=True)
class VerifiedCredential:
    """The facts of a credential whose proof, issuer and validity were checked."""

    credential_id: str
    issuer: str
    subject: dict[str, Any]
    valid_from_ms: int
    valid_until_ms: int
    document: dict[str, Any]


def iso_from_ms(ms: int) -> str:
    """XML Schema dateTimeStamp in UTC, to the second (how credentials say instants)."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ms_from_iso(value: Any, name: str) -> int:
    """Milliseconds since the epoch of a dateTimeStamp (a time zone is required)."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise EvidenceError(f"{name} is not a dateTimeStamp", code="evidence_malformed")
    return int(parsed.timestamp() * 1000)


def issue_credential(key: AgentKey, credential: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """`credential` (VC 2.0, issuer = key.did) secured with an eddsa-jcs-2022 proof."""
    options = {
        "created": iso_from_ms(now_ms),
        "verificationMethod": did_key_method(key.did),
        "proofPurpose": "assertionMethod",
    }
    return add_eddsa_jcs_proof(credential, key.seed, options)


def verify_credential(document: Any, credential_type: str, now_ms: int) -> VerifiedCredential:
    """Check a VC of `credential_type`: shape, issuer's proof, validity period."""
    if not isinstance(document, dict):
        raise _malformed("a credential is a JSON object")
    context, types = document.get("@context"), document.get("type")
    if not isinstance(context, list) or not context or context[0] != VC_CONTEXT:
        raise _malformed(f"a credential's @context starts with {VC_CONTEXT}")
    if not isinstance(types, list) or VC_TYPE not in types or credential_type not in types:
        raise EvidenceError(f"not a {credential_type}", code="evidence_wrong_type")
    credential_id, issuer = document.get("id"), credential_issuer(document)
    subject = document.get("credentialSubject")
    if not isinstance(credential_id, str) or not 0 < len(credential_id) <= 200:
        raise _malformed("a credential has an id")
    if not isinstance(subject, dict):
        raise _malformed("a credential has one credentialSubject object")
    if proof_controller(document) != issuer or not verify_eddsa_jcs_proof(document):
        raise EvidenceError(
            "the credential's proof does not verify for its issuer", code="evidence_bad_signature"
        )
    valid_from = ms_from_iso(document.get("validFrom"), "validFrom")
    valid_until = ms_from_iso(document.get("validUntil"), "validUntil")
    if valid_until <= valid_from:
        raise _malformed("validUntil must be after validFrom")
    if valid_from > now_ms:
        raise EvidenceError("credential is not valid yet", code="evidence_not_yet_valid")
    if valid_until <= now_ms:
        raise EvidenceError("credential has expired", code="evidence_expired")
    return VerifiedCredential(credential_id, issuer, subject, valid_from, valid_until, document)


def credential_issuer(document: dict[str, Any]) -> str:
    """The issuer's did:key (the `issuer` string or object id)."""
    issuer = document.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    try:
        public_key_from_did(issuer)  # type: ignore[arg-type]
    except IdentityError as exc:
        raise _malformed(f"issuer: {exc}") from exc
    return str(issuer)


def subject_did(verified: VerifiedCredential) -> str:
    """The did:key the credential is about."""
    did = verified.subject.get("id")
    try:
        public_key_from_did(did)  # type: ignore[arg-type]
    except IdentityError as exc:
        raise _malformed(f"credentialSubject.id: {exc}") from exc
    return str(did)


def _malformed(message: str) -> EvidenceError:
    return EvidenceError(message, code="evidence_malformed")
