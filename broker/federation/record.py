"""The TrustRecordCredential a broker issues about an agent, the status list that revokes
it, and the IdentityCredential form of identity evidence (pure).

A trust record carries aggregates of the agent's record at the issuing broker and nothing
else: decayed counts of verified outcomes, the success rate, incidents and slashes, the
stake it holds, its tier, the period covered. No message content, no counterparty, no
organisation of anyone it dealt with (docs/SECURITY.md, "Portable trust").
"""

from __future__ import annotations

import uuid
from typing import Any

from broker.core.identity import AgentKey
from broker.core.state import Credential, ImportedRecord, PeerState
from broker.core.statuslist import LIST_CREDENTIAL_TYPE, list_subject, status_entry
from broker.errors import EvidenceError
from broker.federation.vc import VC_CONTEXT, VC_TYPE, VerifiedCredential, iso_from_ms, subject_did

TRUST_RECORD_TYPE = "TrustRecordCredential"
IDENTITY_TYPE = "IdentityCredential"
_COUNT_FIELDS = ("interactions", "successes", "failures")


def status_list_id(broker_did: str) -> str:
    """The id of a broker's revocation status list credential (stable per broker key)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, broker_did + '/status/revocation')}"


def record_subject(
    peer: PeerState, tier: str, now_ms: int, *, success_half_life_ms: int, failure_half_life_ms: int
) -> dict[str, Any]:
    """The credentialSubject summarising `peer`'s record here, as of `now_ms`."""
    successes = _amount(peer.successes.at(now_ms, success_half_life_ms))
    failures = _amount(peer.failures.at(now_ms, failure_half_life_ms))
    total = _amount(successes + failures)
    subject: dict[str, Any] = {
        "id": peer.did,
        "type": "TrustRecord",
        "periodStart": iso_from_ms(_period_start(peer, now_ms)),
        "periodEnd": iso_from_ms(now_ms),
        "interactions": total,
        "successes": successes,
        "failures": failures,
        "successRate": round(successes / total, 4) if total > 0 else None,
        "incidents": 0 if peer.last_anomaly_ms is None else 1,
        "slashes": 1 if peer.bond is not None and peer.bond.slashed_minor > 0 else 0,
        "tier": tier,
    }
    if peer.bond is not None:
        subject["stake"] = {
            "currency": peer.bond.currency,
            "bondedMinor": peer.bond.amount_minor,
            "slashedMinor": peer.bond.slashed_minor,
        }
    return subject


def _amount(value: float) -> float | int:
    """A decayed count to three decimals; a whole one as an integer (plain JSON)."""
    rounded = round(value, 3)
    return int(rounded) if rounded == int(rounded) else rounded


def _period_start(peer: PeerState, now_ms: int) -> int:
    """The earliest instant of evidence still on record about the peer."""
    candidates = [
        peer.possession_verified_ms,
        peer.credential and peer.credential.issued_at_ms,
        peer.bond and peer.bond.issued_at_ms,
        peer.manifest and peer.manifest.issued_at_ms,
        peer.successes.as_of_ms or None,
    ]
    return min([now_ms, *(c for c in candidates if c)])


def trust_record(
    broker_did: str, subject: dict[str, Any], credential_id: str, index: int,
    now_ms: int, validity_ms: int,
) -> dict[str, Any]:  # fmt: skip
    """An unsigned TrustRecordCredential with its revocation status entry."""
    return {
        **_unsigned(broker_did, credential_id, TRUST_RECORD_TYPE, now_ms, validity_ms),
        "credentialSubject": subject,
        "credentialStatus": status_entry(status_list_id(broker_did), index),
    }


def status_list_credential(
    broker_did: str, bitstring: bytes, now_ms: int, validity_ms: int
) -> dict[str, Any]:
    """An unsigned BitstringStatusListCredential of a broker's revocations."""
    list_id = status_list_id(broker_did)
    return {
        **_unsigned(broker_did, list_id, LIST_CREDENTIAL_TYPE, now_ms, validity_ms),
        "credentialSubject": list_subject(list_id, bitstring),
    }


def _unsigned(
    broker_did: str, credential_id: str, kind: str, now_ms: int, validity_ms: int
) -> dict[str, Any]:
    """The members every credential a broker issues starts with (VC Data Model 2.0)."""
    return {
        "@context": [VC_CONTEXT],
        "id": credential_id,
        "type": [VC_TYPE, kind],
        "issuer": broker_did,
        "validFrom": iso_from_ms(now_ms),
        "validUntil": iso_from_ms(now_ms + validity_ms),
    }


def identity_credential(
    issuer: AgentKey, subject: str, organisation: str, now_ms: int, validity_ms: int
) -> dict[str, Any]:
    """An unsigned IdentityCredential: `issuer` binds `subject` to `organisation`."""
    return {
        "@context": [VC_CONTEXT],
        "id": f"urn:uuid:{uuid.uuid4()}",
        "type": [VC_TYPE, IDENTITY_TYPE],
        "issuer": issuer.did,
        "validFrom": iso_from_ms(now_ms),
        "validUntil": iso_from_ms(now_ms + validity_ms),
        "credentialSubject": {"id": subject, "organisation": organisation},
    }


def imported_from(verified: VerifiedCredential) -> ImportedRecord:
    """The aggregates of a verified TrustRecordCredential."""
    subject = verified.subject
    subject_did(verified)
    for name in _COUNT_FIELDS:
        _count(subject, name, integral=False)
    return ImportedRecord(
        credential_id=verified.credential_id,
        issuer=verified.issuer,
        successes=_count(subject, "successes", integral=False),
        # An incident (a behavioural anomaly there) counts as one more verified failure.
        failures=_count(subject, "failures", integral=False)
        + _count(subject, "incidents", integral=True),
        slashes=int(_count(subject, "slashes", integral=True)),
        valid_from_ms=verified.valid_from_ms,
        valid_until_ms=verified.valid_until_ms,
    )


def identity_from(verified: VerifiedCredential) -> Credential:
    """The Credential facts of a verified IdentityCredential."""
    organisation = verified.subject.get("organisation")
    if not isinstance(organisation, str) or not 0 < len(organisation) <= 200:
        raise EvidenceError(
            "an IdentityCredential names an organisation", code="evidence_malformed"
        )
    return Credential(
        credential_id=verified.credential_id,
        issuer=verified.issuer,
        subject=subject_did(verified),
        organisation=organisation,
        issued_at_ms=verified.valid_from_ms,
        expires_at_ms=verified.valid_until_ms,
    )


def _count(subject: dict[str, Any], name: str, *, integral: bool) -> float:
    """A non-negative number of the subject (a whole one when `integral`)."""
    value = subject.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e12:
        raise EvidenceError(f"{name} must be a non-negative number", code="evidence_malformed")
    if integral and int(value) != value:
        raise EvidenceError(f"{name} must be a whole number", code="evidence_malformed")
    return float(value)
