"""W3C Data Integrity proofs with the `eddsa-jcs-2022` cryptosuite (W3C vc-di-eddsa).

The signed bytes are SHA-256(JCS(proof configuration)) || SHA-256(JCS(document without
its proof)), the signature is Ed25519 and `proofValue` is multibase base58btc ('z').
The proof configuration is the proof without `proofValue`; when the document has an
`@context`, the proof carries the same one and a verifier checks that the document's
context starts with it, then hashes the document with the proof's context. Verification
methods are did:key URLs (`did:key:z6Mk...#z6Mk...`) unless the caller supplies the
public key of another URL. Pure code; tested against the specification's own vectors
(tests/vectors/eddsa-jcs-2022.json).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import base58

from broker.core.canonical import canonical_json
from broker.core.identity import AgentKey, public_key_from_did, verify_signature
from broker.errors import EnvelopeError, EvidenceError, IdentityError

PROOF_TYPE = "DataIntegrityProof"
CRYPTOSUITE = "eddsa-jcs-2022"
# XML Schema dateTimeStamp, as the Data Integrity spec requires of `created`/`expires`.
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def add_eddsa_jcs_proof(
    document: dict[str, Any], seed: bytes, options: dict[str, Any]
) -> dict[str, Any]:
    """`document` with an eddsa-jcs-2022 proof by the Ed25519 key of `seed`.

    `options` carry `created`, `verificationMethod`, `proofPurpose` and optionally
    `@context` (copied from the document when absent)."""
    if "proof" in document:
        raise EvidenceError("the document already carries a proof", code="evidence_malformed")
    config = {**options, "type": PROOF_TYPE, "cryptosuite": CRYPTOSUITE}
    config.pop("proofValue", None)
    if "@context" in document and "@context" not in config:
        config["@context"] = document["@context"]
    _check_config(config)
    signature = AgentKey(seed).sign(_hash_data(config, document))
    return {**document, "proof": {**config, "proofValue": multibase_base58(signature)}}


def verify_eddsa_jcs_proof(
    document: dict[str, Any], *, public_keys: Mapping[str, bytes] | None = None
) -> bool:
    """True when `document` carries one valid eddsa-jcs-2022 proof.

    The key comes from the did:key `verificationMethod`, or from `public_keys` (URL ->
    raw 32-byte key) for a verification method that is not a did:key."""
    proof = document.get("proof") if isinstance(document, dict) else None
    if not isinstance(proof, dict):
        return False
    config = {k: v for k, v in proof.items() if k != "proofValue"}
    unsecured = {k: v for k, v in document.items() if k != "proof"}
    try:
        _check_config(config)
        signature = _multibase_base58_decode(proof.get("proofValue"))
        key = _resolve(config["verificationMethod"], public_keys or {})
        if "@context" in config:
            if not _starts_with(unsecured.get("@context"), config["@context"]):
                return False
            # As the specification says: the document is hashed with the proof's context
            # (contexts appended after signing, e.g. by a later proof, are not covered).
            unsecured["@context"] = config["@context"]
        return verify_signature(key, _hash_data(config, unsecured), signature)
    except (EvidenceError, EnvelopeError, IdentityError):
        return False


def proof_controller(document: dict[str, Any]) -> str | None:
    """The DID whose key made the document's proof (did:key verification methods only)."""
    proof = document.get("proof") if isinstance(document, dict) else None
    method = proof.get("verificationMethod") if isinstance(proof, dict) else None
    if not isinstance(method, str) or "#" not in method:
        return None
    did, fragment = method.split("#", 1)
    return did if did.startswith("did:key:") and did == f"did:key:{fragment}" else None


def did_key_method(did: str) -> str:
    """The verification method URL of a did:key: `did:key:<id>#<id>`."""
    return f"{did}#{did.removeprefix('did:key:')}"


def multibase_base58(raw: bytes) -> str:
    """Multibase base58btc: 'z' + base58 (Bitcoin alphabet)."""
    return "z" + base58.b58encode(raw).decode("ascii")


def _multibase_base58_decode(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("z") or len(value) > 100:
        raise EvidenceError("proofValue is not multibase base58btc", code="evidence_malformed")
    try:
        return bytes(base58.b58decode(value[1:]))
    except ValueError:
        raise EvidenceError("proofValue is not base58btc", code="evidence_malformed") from None


def _hash_data(config: dict[str, Any], document: dict[str, Any]) -> bytes:
    """SHA-256 of the canonical proof configuration, then of the canonical document."""
    return (
        hashlib.sha256(canonical_json(config)).digest()
        + hashlib.sha256(canonical_json(document)).digest()
    )


def _check_config(config: dict[str, Any]) -> None:
    if config.get("type") != PROOF_TYPE or config.get("cryptosuite") != CRYPTOSUITE:
        raise EvidenceError("not an eddsa-jcs-2022 DataIntegrityProof", code="evidence_malformed")
    for name in ("verificationMethod", "proofPurpose"):
        if not isinstance(config.get(name), str):
            raise EvidenceError(f"proof needs {name}", code="evidence_malformed")
    for name in ("created", "expires"):
        value = config.get(name)
        if value is not None and not (isinstance(value, str) and _DATETIME.fullmatch(value)):
            raise EvidenceError(f"proof {name} is not a dateTimeStamp", code="evidence_malformed")


def _resolve(method: str, public_keys: Mapping[str, bytes]) -> bytes:
    """The raw Ed25519 key a verification method names."""
    if method in public_keys:
        return public_keys[method]
    did, _, fragment = method.partition("#")
    # A did:key's only verification method is the key itself, named by its fragment.
    if fragment and fragment != did.removeprefix("did:key:"):
        raise IdentityError("did:key verification method fragment names another key")
    return public_key_from_did(did)


def _starts_with(document_context: Any, proof_context: Any) -> bool:
    doc, proof = _as_list(document_context), _as_list(proof_context)
    return len(doc) >= len(proof) and doc[: len(proof)] == proof


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
