"""Pure conversion between snapshots and Redis hash fields (bytes in, dataclasses out)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from broker.core.envelope import MESSAGE_KINDS
from broker.core.policy import RETENTION_ORDER
from broker.core.state import (
    Attestation,
    Bond,
    Credential,
    DecayedCount,
    ImportedRecord,
    Manifest,
    PeerState,
    RecipientProfile,
    Vouch,
)

# Hash field names of a peer's state; short because they are stored for every peer.
REVOKED = "revoked"
POSSESSION_AT = "pos_at"
POSSESSION_UNTIL = "pos_until"
CREDENTIAL = "cred"
ATTESTATION = "att"
EXPECTED_CODE = "code"
SUCCESS_VALUE, SUCCESS_AT = "succ", "succ_at"
FAILURE_VALUE, FAILURE_AT = "fail", "fail_at"
CLEAN = "clean"
ANOMALY = "anomaly"
BOND = "bond"
BOND_CUT = "bond_cut"  # minor units slashed from the recorded bond since it was recorded
MANIFEST = "manifest"
PAYMENT_HOLD = "pay_hold"  # ms until which the peer's payments are escalated
IMPORTED = "fed:"  # + issuer DID: a record that issuer's broker exported (federation)
_IMPORTED = IMPORTED.encode()


def watermark_field(kind: str) -> str:
    """Hash field of the newest document of `kind` recorded: '<issued_at>|<id>'."""
    return f"wm:{kind}"


def _text(fields: dict[bytes, bytes], name: str) -> str | None:
    raw = fields.get(name.encode())
    return None if raw is None else raw.decode()


def _int(fields: dict[bytes, bytes], name: str) -> int | None:
    raw = fields.get(name.encode())
    return None if raw is None else int(raw)


def _json(fields: dict[bytes, bytes], name: str) -> Any:
    raw = fields.get(name.encode())
    return None if raw is None else orjson.loads(raw)


def _decayed(fields: dict[bytes, bytes], value: str, at: str) -> DecayedCount:
    raw = fields.get(value.encode())
    if raw is None:
        return DecayedCount()
    return DecayedCount(float(raw), _int(fields, at) or 0)


def domain_failure_fields(kind: str) -> tuple[str, str]:
    """Hash fields of the decayed failures a peer took in one message kind."""
    return f"fail_{kind}", f"fail_{kind}_at"


def peer_from_hash(did: str, fields: dict[bytes, bytes], spent_ref: int = 0) -> PeerState:
    """Build a PeerState from HGETALL output (missing fields mean 'nothing known')."""
    cred = _json(fields, CREDENTIAL)
    att = _json(fields, ATTESTATION)
    bond = _json(fields, BOND)
    manifest = _json(fields, MANIFEST)
    if bond is not None and "bond_id" not in bond:
        bond = None  # recorded before bonds named their custodian: it cannot count
    if bond is not None:
        bond["slashed_minor"] = _int(fields, BOND_CUT) or 0
    return PeerState(
        did=did,
        revoked=fields.get(REVOKED.encode()) == b"1",
        possession_verified_ms=_int(fields, POSSESSION_AT),
        possession_expires_ms=_int(fields, POSSESSION_UNTIL),
        credential=Credential(**cred) if cred else None,
        attestation=Attestation(**att) if att else None,
        expected_codebase_hash=_text(fields, EXPECTED_CODE),
        successes=_decayed(fields, SUCCESS_VALUE, SUCCESS_AT),
        failures=_decayed(fields, FAILURE_VALUE, FAILURE_AT),
        clean_streak=_int(fields, CLEAN) or 0,
        last_anomaly_ms=_int(fields, ANOMALY),
        bond=Bond(**bond) if bond else None,
        manifest=manifest_from(manifest),
        spent_24h_ref=spent_ref,
        payment_hold_until_ms=_int(fields, PAYMENT_HOLD),
        domain_failures={
            kind: _decayed(fields, *domain_failure_fields(kind))
            for kind in MESSAGE_KINDS
            if domain_failure_fields(kind)[0].encode() in fields
        },
        imported=tuple(
            ImportedRecord(**orjson.loads(value))
            for _, value in sorted(
                (name, value) for name, value in fields.items() if name.startswith(_IMPORTED)
            )
        ),
    )


def credential_field(cred: Credential) -> bytes:
    """JSON for the credential field."""
    return orjson.dumps(asdict(cred))


def attestation_field(att: Attestation) -> bytes:
    """JSON for the attestation field."""
    return orjson.dumps(asdict(att))


def bond_field(bond: Bond) -> bytes:
    """JSON for the bond field (what was slashed since lives in BOND_CUT)."""
    data = asdict(bond)
    del data["slashed_minor"]
    return orjson.dumps(data)


def manifest_field(manifest: Manifest) -> bytes:
    """JSON for the manifest field."""
    return orjson.dumps({**asdict(manifest), "kinds": sorted(manifest.kinds)})


def manifest_from(data: Any) -> Manifest | None:
    """The stored manifest; a bare list is a record from before manifests kept their
    validity, which counts as expired (it can only narrow, so dropping it is safe)."""
    if not isinstance(data, dict):
        return None
    return Manifest(
        data["manifest_id"], frozenset(data["kinds"]), data["issued_at_ms"], data["expires_at_ms"]
    )


def vouch_field(vouch: Vouch) -> bytes:
    """JSON for a vouch: who vouched, for what share, until when."""
    data = {"voucher": vouch.voucher, "share": vouch.share, "expires_at_ms": vouch.expires_at_ms}
    return orjson.dumps(data)


def vouch_from(raw: bytes) -> Vouch:
    """A stored vouch, without its voucher's standing (read with the voucher's state)."""
    data = orjson.loads(raw)
    return Vouch(data["voucher"], data["share"], data["expires_at_ms"])


def recipient_to_hash(profile: RecipientProfile) -> dict[str, bytes]:
    """Hash fields for a recipient profile (None lists mean 'anything')."""
    fields = {
        "retention": profile.retention.encode(),
        "requires_pact": b"1" if profile.requires_pact else b"0",
    }
    if profile.accepted_kinds is not None:
        fields["kinds"] = orjson.dumps(sorted(profile.accepted_kinds))
    if profile.accepted_data_classes is not None:
        fields["classes"] = orjson.dumps(sorted(profile.accepted_data_classes))
    return fields


def recipient_from_hash(did: str, fields: dict[bytes, bytes]) -> RecipientProfile | None:
    """A RecipientProfile, or None when the recipient is not registered."""
    if not fields:
        return None
    retention = _text(fields, "retention") or "ephemeral"
    if retention not in RETENTION_ORDER:
        retention = "permanent"  # unknown data must be treated as the least private
    kinds = _json(fields, "kinds")
    classes = _json(fields, "classes")
    return RecipientProfile(
        did=did,
        retention=retention,  # type: ignore[arg-type]
        accepted_kinds=frozenset(kinds) if kinds is not None else None,
        accepted_data_classes=frozenset(classes) if classes is not None else None,
        requires_pact=fields.get(b"requires_pact") == b"1",
    )
