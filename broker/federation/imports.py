"""Recording presented W3C credentials: other brokers' trust records and status lists,
and identity credentials in VC form.

- BitstringStatusListCredential: kept (newest per list) when its issuer is on the trust
  list; records it covers that it marks revoked are revoked here at once.
- TrustRecordCredential: counted only from an issuer trusted for `federation`, about the
  agent presenting it, for a first-time peer, with the issuer's current status list
  presented first (offline: no fetching) and not marking it revoked.
- IdentityCredential: an identity credential like `trust-broker/credential`, from an
  issuer trusted for `identity`.
"""

from __future__ import annotations

from typing import Any

from broker.core.state import IssuerRole
from broker.core.statuslist import (
    LIST_CREDENTIAL_TYPE,
    bit_at,
    decode_list,
    entry_index,
    revoked_in,
)
from broker.errors import EvidenceError
from broker.federation.record import IDENTITY_TYPE, TRUST_RECORD_TYPE, identity_from, imported_from
from broker.federation.vc import VerifiedCredential, subject_did, verify_credential
from broker.store.redis import RedisStore


async def apply_credential(
    store: RedisStore, document: dict[str, Any], now_ms: int, presenter: str | None
) -> str:
    """Verify one presented VC and record it; return its id (EvidenceError otherwise)."""
    types = document.get("type") or []
    if LIST_CREDENTIAL_TYPE in types:
        return await _apply_status_list(store, document, now_ms)
    if TRUST_RECORD_TYPE in types:
        return await _apply_trust_record(store, document, now_ms, presenter)
    if IDENTITY_TYPE in types:
        return await _apply_identity(store, document, now_ms, presenter)
    raise EvidenceError("unknown credential type", code="evidence_wrong_type")


async def _apply_status_list(store: RedisStore, document: dict[str, Any], now_ms: int) -> str:
    verified = verify_credential(document, LIST_CREDENTIAL_TYPE, now_ms)
    if verified.issuer not in (await store.globals(now_ms)).issuers:
        raise EvidenceError(
            "the issuer of this status list is not on the trust list",
            code="evidence_issuer_untrusted",
        )
    bits = decode_list(verified.subject.get("encodedList"))
    value = {
        "issuer": verified.issuer, "valid_from_ms": verified.valid_from_ms,
        "valid_until_ms": verified.valid_until_ms, "document": document,
    }  # fmt: skip
    if await store.federation.store_list(verified.issuer, verified.credential_id, value):
        # Records imported earlier that this newer list revokes stop counting now.
        entries = await store.federation.entries(verified.issuer, verified.credential_id)
        for credential_id, index in entries.items():
            if index < len(bits) * 8 and bit_at(bits, index):
                await store.revoke_evidence(credential_id)
    return verified.credential_id


async def _apply_trust_record(
    store: RedisStore, document: dict[str, Any], now_ms: int, presenter: str | None
) -> str:
    verified = verify_credential(document, TRUST_RECORD_TYPE, now_ms)
    subject = _about_presenter(verified, presenter)
    await _trusted(store, verified, IssuerRole.FEDERATION, now_ms)
    list_id, index = entry_index(document.get("credentialStatus"))
    await _check_status(store, verified, list_id, now_ms)
    peer = await store.peer(subject, now_ms, cached=False)
    if peer.successes.value > 0 or peer.failures.value > 0:
        raise EvidenceError(
            "an imported record is a prior for a first-time peer; this one has a history here",
            code="federation_not_first_time",
        )
    record = imported_from(verified)
    outcome = await store.set_imported_record(subject, record)
    if outcome == "superseded":
        raise EvidenceError(
            "a newer record from this issuer is already imported", code="evidence_superseded"
        )
    await store.federation.track_entry(verified.issuer, list_id, record.credential_id, index)
    return verified.credential_id


async def _apply_identity(
    store: RedisStore, document: dict[str, Any], now_ms: int, presenter: str | None
) -> str:
    verified = verify_credential(document, IDENTITY_TYPE, now_ms)
    _about_presenter(verified, presenter)
    await _trusted(store, verified, IssuerRole.IDENTITY, now_ms)
    if "credentialStatus" in document:
        list_id, _ = entry_index(document["credentialStatus"])
        await _check_status(store, verified, list_id, now_ms)
    if await store.set_credential(identity_from(verified)) == "superseded":
        raise EvidenceError(
            "a newer credential about this agent is already recorded", code="evidence_superseded"
        )
    return verified.credential_id


def _about_presenter(verified: VerifiedCredential, presenter: str | None) -> str:
    """The subject DID, which must be the presenting agent (ops may present any)."""
    subject = subject_did(verified)
    if subject == verified.issuer:
        raise EvidenceError(
            "a credential its own subject issued proves nothing", code="evidence_self_issued"
        )
    if presenter is not None and presenter != subject:
        raise EvidenceError(
            "the document does not concern the agent presenting it",
            code="evidence_subject_mismatch",
        )
    return subject


async def _trusted(
    store: RedisStore, verified: VerifiedCredential, role: IssuerRole, now_ms: int
) -> None:
    if not (await store.globals(now_ms)).issuers.trusts(verified.issuer, role):
        raise EvidenceError(
            f"the issuer of this credential is not on the trust list for {role.value}",
            code="evidence_issuer_untrusted",
        )


async def _check_status(
    store: RedisStore, verified: VerifiedCredential, list_id: str, now_ms: int
) -> None:
    """Refuse a credential its issuer's current status list revokes (or cannot vouch for)."""
    # Lists are kept per issuer: nobody else's list, whatever id it claims, can stand in.
    stored = await store.federation.presented_list(verified.issuer, list_id)
    if stored is None:
        raise EvidenceError(
            "present the issuer's status list credential first (it names this credential's "
            "statusListCredential)",
            code="federation_status_unknown",
        )
    if stored["valid_until_ms"] <= now_ms:
        raise EvidenceError("the issuer's status list has expired", code="federation_status_stale")
    if revoked_in(verified.document["credentialStatus"], stored["document"]):
        raise EvidenceError("the issuer has revoked this credential", code="evidence_revoked")
