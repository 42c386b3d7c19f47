"""Documents agents present during negotiation, recorded once verified
(broker/core/agreements.py says what each must say and who must sign it).

Agents present documents inside a presentation they sign themselves (`make_presentation`),
so every document is bound to its presenter: an agent may present only documents about
itself (`PARTIES`). A newer document of the same kind about the same agent supersedes an
older one, and the older one presented later is refused (`evidence_superseded`), so
nobody can roll a peer back. Issuer-signed evidence counts only from an issuer trusted
for its role, checked here against the trust list as it is now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from broker.core.agreements import (
    PARTIES,
    malformed,
    narrowed,
    required,
    verify_manifest,
    verify_pact,
    verify_rotation,
    verify_vouch,
)
from broker.core.evidence import (
    ROLES,
    EvidenceType,
    attestation_from,
    bond_from,
    credential_from,
    verify_evidence,
)
from broker.core.policy import RETENTION_ORDER
from broker.core.state import Manifest
from broker.errors import EvidenceError
from broker.store.redis import RedisStore

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
        raise malformed("a document is a JSON object with a type")
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


# -- capability manifest ---------------------------------------------------------------


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
            accepted_kinds=narrowed(profile.accepted_kinds, manifest["accept_kinds"]),
            accepted_data_classes=narrowed(
                profile.accepted_data_classes, manifest["accept_classes"]
            ),
        )
    )


# -- key rotation ----------------------------------------------------------------------


async def _apply_rotation(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    old, new = verify_rotation(document, now_ms)
    outcome = await store.rotate_key(old, new)
    if outcome == "old_revoked":
        raise EvidenceError("the old key is revoked: it cannot hand over", code="rotation_revoked")
    if outcome == "new_in_use":
        # Carrying history into a key that already has its own would merge two identities.
        raise EvidenceError("the new key already has history", code="rotation_target_in_use")


# -- vouching and slashing ------------------------------------------------------------


async def _apply_vouch(store: RedisStore, document: dict[str, Any], now_ms: int) -> None:
    vouchee, vouch = verify_vouch(document, now_ms)
    issued = (int(document["issued_at"]), str(required(document, "id", str)))
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
