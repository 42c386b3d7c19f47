"""Signed documents about a peer, recorded once verified by the caller: credentials,
attestations, bonds, manifests, other brokers' records, vouches and pacts. Of each kind
the newest wins (lua/supersede.lua): an older one presented later is refused, the same
one again changes nothing."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from broker.core.state import (
    Attestation,
    Bond,
    Credential,
    ImportedRecord,
    Manifest,
    PactTerms,
    Vouch,
)
from broker.store import codec
from broker.store.base import StoreBase, text

# The peer hash field each kind of evidence is recorded in.
_FIELDS = {"credential": codec.CREDENTIAL, "attestation": codec.ATTESTATION,
           "bond": codec.BOND, "manifest": codec.MANIFEST}  # fmt: skip


class Evidence(StoreBase):
    """Recording documents (each 'ok', 'same' or 'superseded') and reading pacts."""

    async def set_credential(self, cred: Credential) -> str:
        """Record a credential verified by the caller unless a newer one is recorded:
        'ok', 'same' (this very one again) or 'superseded'."""
        value = codec.credential_field(cred)
        return await self._record_evidence(
            cred.subject, "credential", (cred.issued_at_ms, cred.credential_id), value
        )

    async def set_attestation(self, att: Attestation) -> str:
        """Record an attestation verified by the caller ('ok', 'same' or 'superseded')."""
        value = codec.attestation_field(att)
        return await self._record_evidence(
            att.subject, "attestation", (att.issued_at_ms, att.attestation_id), value
        )

    async def set_bond(self, did: str, bond: Bond) -> str:
        """Record a custodian's bond verified by the caller ('ok', 'same' or 'superseded');
        a new bond starts with nothing slashed, the same one again keeps its slashes."""
        return await self._record_evidence(
            did, "bond", (bond.issued_at_ms, bond.bond_id), codec.bond_field(bond),
            reset=codec.BOND_CUT,
        )  # fmt: skip

    async def set_manifest(self, did: str, manifest: Manifest) -> str:
        """Record a verified capability manifest ('ok', 'same' or 'superseded')."""
        value = codec.manifest_field(manifest)
        return await self._record_evidence(
            did, "manifest", (manifest.issued_at_ms, manifest.manifest_id), value
        )

    async def _record_evidence(
        self, did: str, kind: str, issued: tuple[int, str], value: bytes, *, reset: str = ""
    ) -> str:
        peer = self.keys.peer(did)
        outcome = await self._supersede_into(
            peer, peer, codec.watermark_field(kind), issued, field=_FIELDS[kind], value=value,
            reset=reset,
        )  # fmt: skip
        if outcome == "ok" and kind != "manifest":
            entry = f"{kind}|{did}".encode()
            await self._call(self._redis.hset(self.keys.evidence_ids, issued[1], entry))
        if outcome == "ok":
            await self.invalidate(f"peer:{did}")
        return outcome

    async def _supersede_into(
        self,
        watermark_key: str,
        target_key: str,
        watermark: str,
        issued: tuple[int, str],
        *,
        value: bytes,
        field: str = "",
        expires_ms: int = 0,
        reset: str = "",
    ) -> str:
        mode = "hash" if field else "string"
        args: list[bytes | str | int] = [
            watermark, issued[0], issued[1], mode, field, value, expires_ms, reset,
        ]  # fmt: skip
        script = self._lua("supersede")
        return text(await self._call(script(keys=[watermark_key, target_key], args=args)))

    async def set_imported_record(self, did: str, record: ImportedRecord) -> str:
        """Record another broker's verified trust record about `did` ('ok', 'same' or
        'superseded': one record per issuer, the newest wins)."""
        field = codec.IMPORTED + record.issuer
        peer = self.keys.peer(did)
        issued = (record.valid_from_ms, record.credential_id)
        value = orjson.dumps(asdict(record))
        outcome = await self._supersede_into(
            peer, peer, codec.watermark_field(field), issued, field=field, value=value
        )
        if outcome == "ok":
            entry = f"federation|{did}".encode()
            await self._call(self._redis.hset(self.keys.evidence_ids, record.credential_id, entry))
            await self.invalidate(f"peer:{did}")
        return outcome

    async def add_vouch(self, vouchee: str, vouch: Vouch, *, issued: tuple[int, str]) -> str:
        """Record `vouch` for `vouchee` (signature verified by the caller) unless a newer
        vouch from the same voucher is recorded ('ok', 'same' or 'superseded')."""
        outcome = await self._supersede_into(
            self.keys.peer(vouchee), self.keys.vouches(vouchee),
            codec.watermark_field(f"vouch:{vouch.voucher}"), issued,
            field=vouch.voucher, value=codec.vouch_field(vouch),
        )  # fmt: skip
        if outcome == "ok":
            await self.invalidate(f"peer:{vouchee}")
        return outcome

    # -- pacts ----------------------------------------------------------------------------

    async def set_pact(
        self, pact: PactTerms, document: dict[str, Any], *, issued_at_ms: int
    ) -> str:
        """Record a pact both parties signed (verified by the caller), with its document,
        unless a newer pact between them is recorded ('ok', 'same' or 'superseded')."""
        data = {
            "pact_id": pact.pact_id,
            "sender": pact.sender,
            "recipient": pact.recipient,
            "kinds": sorted(pact.kinds),
            "data_classes": sorted(pact.data_classes),
            "max_payment_minor": pact.max_payment_minor,
            "currency": pact.currency,
            "expires_at_ms": pact.expires_at_ms,
        }
        key = self.keys.pact(pact.sender, pact.recipient)
        stored = {"terms": data, "monitoring": document.get("monitoring"), "document": document}
        # The key expires with the pact, so an expired pact cannot linger in Redis.
        outcome = await self._supersede_into(
            self.keys.peer(pact.sender), key, codec.watermark_field(f"pact:{pact.recipient}"),
            (issued_at_ms, pact.pact_id), value=orjson.dumps(stored),
            expires_ms=pact.expires_at_ms,
        )  # fmt: skip
        if outcome == "ok":
            await self.invalidate(f"pact:{pact.sender}|{pact.recipient}")
        return outcome

    async def pact(self, sender: str, recipient: str, now_ms: int = 0) -> PactTerms | None:
        """The stored pact from sender to recipient, if any (cached, invalidated on change)."""
        hit = self._pacts.get((sender, recipient), now_ms)
        if hit is not None:
            return hit if isinstance(hit, PactTerms) else None
        terms = await self._load_pact(sender, recipient)
        self._pacts.put((sender, recipient), terms or False, now_ms)
        return terms

    async def _load_pact(self, sender: str, recipient: str) -> PactTerms | None:
        raw = await self._call(self._redis.get(self.keys.pact(sender, recipient)))
        if raw is None:
            return None
        stored = orjson.loads(raw)
        data = stored["terms"]
        data["monitoring"] = stored.get("monitoring") or "metadata"
        data["kinds"] = frozenset(data["kinds"])
        data["data_classes"] = frozenset(data["data_classes"])
        return PactTerms(**data)

    async def pacts_from(self, sender: str) -> list[dict[str, Any]]:
        """Active pacts with `sender` as the sending party (terms and monitoring)."""
        pattern = self.keys.pact(sender, "*")
        pacts = []
        async for key in self._redis.scan_iter(match=pattern, count=200):
            raw = await self._call(self._redis.get(key))
            if raw is not None:
                stored = orjson.loads(raw)
                pacts.append({**stored["terms"], "monitoring": stored["monitoring"]})
        return pacts
