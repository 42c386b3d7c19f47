"""Issuer-signed evidence: credentials, code attestations and stake bonds.

Each is a JSON object whose every field, expiry included, is covered by an Ed25519
signature over its RFC 8785 canonical bytes (the object without ``signature``). The
signature is checked when the evidence is presented, and so is the issuer's role on the
trust list (`ROLES`); whether the issuer is still trusted, and whether the evidence has
expired or been revoked, is checked again on every decision. Evidence an agent issues
about itself is refused outright (`evidence_self_issued`): anyone can mint that.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from broker.core.currency import is_currency
from broker.core.identity import AgentKey, cached_public_key
from broker.core.signing import sign_document, signed_by
from broker.core.state import Attestation, Bond, Credential, IssuerRole
from broker.errors import EvidenceError, IdentityError

EvidenceType = Literal["credential", "attestation", "bond", "slash"]
# The role an issuer must hold on the trust list for each kind of evidence to count.
ROLES: dict[str, IssuerRole] = {
    "credential": IssuerRole.IDENTITY,
    "attestation": IssuerRole.ATTESTATION,
    "bond": IssuerRole.STAKE,
    "slash": IssuerRole.STAKE,
}
SLASH_CONDITIONS = ("fraud", "data_manipulation", "service_denial")



class _Evidence(BaseModel):
    """The fields every piece of evidence has, exactly these types (strict: a timestamp
    of `true` or `1.0` is malformed) and no others; the signature is checked by
    `signed_by`, not here."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: str
    id: str
    issuer: str
    issued_at: int
    expires_at: int
    subject: str
    signature: Any = None


class CredentialDocument(_Evidence):
    """An identity credential: the subject belongs to `organisation`."""

    organisation: str


class AttestationDocument(_Evidence):
    """A code attestation: the subject runs this code with this configuration."""

    codebase_hash: str
    config_hash: str


class BondDocument(_Evidence):
    """A stake bond: a custodian holds `amount_minor` of `currency` for the subject."""

    amount_minor: int
    currency: str


class SlashDocument(_Evidence):
    """A custodian takes `amount_minor` of the subject's bond for `condition`."""

    condition: str
    amount_minor: int


# One model per document type.
DOCUMENTS: dict[str, type[_Evidence]] = {
    "credential": CredentialDocument,
    "attestation": AttestationDocument,
    "bond": BondDocument,
    "slash": SlashDocument,
}


def sign_evidence(issuer: AgentKey, evidence_type: EvidenceType, **fields: Any) -> dict[str, Any]:
    """Return a signed evidence document issued by `issuer`."""
    document = {"type": f"trust-broker/{evidence_type}", "issuer": issuer.did, **fields}
    _check_shape(document, evidence_type)
    return sign_document(issuer, document)


def verify_evidence(
    document: dict[str, Any], evidence_type: EvidenceType, now_ms: int
) -> dict[str, Any]:
    """Check shape, issuer signature and validity period; return the document."""
    if not isinstance(document, dict):
        raise EvidenceError("evidence must be a JSON object", code="evidence_malformed")
    _check_shape(document, evidence_type)
    if document["issuer"] == document["subject"]:
        raise EvidenceError(
            f"a {evidence_type} its own subject signed proves nothing",
            code="evidence_self_issued",
        )
    if not signed_by(document, document["issuer"]):
        raise EvidenceError("issuer signature does not verify", code="evidence_bad_signature")
    if not document["issued_at"] <= now_ms:
        raise EvidenceError("evidence is issued in the future", code="evidence_not_yet_valid")
    if document["expires_at"] <= now_ms:
        raise EvidenceError("evidence has expired", code="evidence_expired")
    return document


def credential_from(document: dict[str, Any]) -> Credential:
    """The Credential facts of a verified credential document."""
    return Credential(
        credential_id=document["id"],
        issuer=document["issuer"],
        subject=document["subject"],
        organisation=document["organisation"],
        issued_at_ms=document["issued_at"],
        expires_at_ms=document["expires_at"],
    )


def attestation_from(document: dict[str, Any]) -> Attestation:
    """The Attestation facts of a verified attestation document."""
    return Attestation(
        attestation_id=document["id"],
        issuer=document["issuer"],
        subject=document["subject"],
        codebase_hash=document["codebase_hash"],
        config_hash=document["config_hash"],
        issued_at_ms=document["issued_at"],
        expires_at_ms=document["expires_at"],
    )


def bond_from(document: dict[str, Any]) -> Bond:
    """The Bond facts of a verified bond document (who holds it, how much, how long)."""
    return Bond(
        bond_id=document["id"],
        issuer=document["issuer"],
        amount_minor=document["amount_minor"],
        currency=document["currency"],
        issued_at_ms=document["issued_at"],
        expires_at_ms=document["expires_at"],
    )


def _check_shape(document: dict[str, Any], evidence_type: str) -> None:
    model = DOCUMENTS[evidence_type]
    try:
        model.model_validate(document)
    except ValidationError as exc:
        raise EvidenceError(_first_problem(exc, model), code="evidence_malformed") from None
    if document["type"] != f"trust-broker/{evidence_type}":
        raise EvidenceError(f"not a {evidence_type} document", code="evidence_wrong_type")
    if document["expires_at"] <= document["issued_at"]:
        raise EvidenceError("expires_at must be after issued_at", code="evidence_malformed")
    for did_field in ("issuer", "subject"):
        _issuer_key(document[did_field])
    if evidence_type == "slash" and (
        document["condition"] not in SLASH_CONDITIONS or document["amount_minor"] <= 0
    ):
        raise EvidenceError(
            f"slash needs a positive amount and a condition in {SLASH_CONDITIONS}",
            code="evidence_malformed",
        )
    if evidence_type == "bond" and (
        not is_currency(document["currency"]) or document["amount_minor"] <= 0
    ):
        raise EvidenceError(
            "bond needs a positive amount and an ISO 4217 currency", code="evidence_malformed"
        )


def _first_problem(exc: ValidationError, model: type[_Evidence]) -> str:
    """One line for the first problem: an unexpected field (by name), else the first
    field, in the model's order, that is missing or of the wrong type."""
    order = {name: rank for rank, name in enumerate(model.model_fields)}
    problems = [(str(error["loc"][0]), error["type"]) for error in exc.errors() if error["loc"]]
    extra = sorted(name for name, kind in problems if kind == "extra_forbidden")
    if extra:
        return f"unexpected field {extra[0]!r}"
    name = min((name for name, _ in problems), key=lambda n: order.get(n, len(order)))
    annotation = model.model_fields[name].annotation
    kind = getattr(annotation, "__name__", str(annotation))
    return f"field {name!r} must be {kind}"


def _issuer_key(did: str) -> bytes:
    try:
        return cached_public_key(did)
    except IdentityError as exc:
        raise EvidenceError(f"bad DID in evidence: {exc}", code="evidence_malformed") from exc
