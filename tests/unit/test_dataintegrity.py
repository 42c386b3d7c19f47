"""eddsa-jcs-2022 Data Integrity proofs against the W3C vc-di-eddsa test vectors."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import base58
import pytest

from broker import add_eddsa_jcs_proof, verify_eddsa_jcs_proof
from broker.core.canonical import canonical_json
from broker.core.dataintegrity import did_key_method, proof_controller
from broker.core.identity import AgentKey
from broker.errors import EvidenceError

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "eddsa-jcs-2022.json").read_text()
)
PAIR = VECTORS["keyPair"]
# Multikey secret: multicodec ed25519-priv (0x8026) + the 32-byte seed.
SECRET = bytes(base58.b58decode(PAIR["privateKeyMultibase"][1:]))
SEED = SECRET[2:]
PUBLIC = bytes(base58.b58decode(PAIR["publicKeyMultibase"][1:]))[2:]
DID = f"did:key:{PAIR['publicKeyMultibase']}"
SPEC_METHOD = VECTORS["proofConfigJCS"]["verificationMethod"]
KEYS = {SPEC_METHOD: PUBLIC}


def _options(method: str = SPEC_METHOD, *, context: bool = True) -> dict[str, Any]:
    options = {
        "created": "2023-02-24T23:36:38Z",
        "verificationMethod": method,
        "proofPurpose": "assertionMethod",
    }
    if context:
        options["@context"] = VECTORS["unsigned"]["@context"]
    return options


def test_vector_key_pair_is_one_key() -> None:
    assert SECRET[:2] == b"\x80\x26"
    assert AgentKey(SEED).public_key == PUBLIC
    assert AgentKey(SEED).did == DID


def test_canonical_document_and_its_hash() -> None:
    canonical = canonical_json(VECTORS["unsigned"])
    assert canonical == VECTORS["canonDocJCS"].encode()
    assert hashlib.sha256(canonical).hexdigest() == VECTORS["docHashJCS"]


def test_canonical_proof_configuration_and_hashes() -> None:
    config = {"type": "DataIntegrityProof", "cryptosuite": "eddsa-jcs-2022",
              **_options(did_key_method(DID))}  # fmt: skip
    canonical = canonical_json(config)
    assert canonical == VECTORS["proofCanonJCS_didkey"].encode()
    proof_hash = hashlib.sha256(canonical).hexdigest()
    assert proof_hash == VECTORS["proofHashJCS_didkey"]
    assert proof_hash + VECTORS["docHashJCS"] == VECTORS["combinedHashJCS_didkey"]


def test_reproduces_the_signed_vector_byte_for_byte() -> None:
    signed = add_eddsa_jcs_proof(VECTORS["unsigned"], SEED, _options())
    assert signed == VECTORS["signedJCS"]
    signature = base58.b58decode(signed["proof"]["proofValue"][1:])
    assert signature.hex() == VECTORS["sigHexJCS"]


def test_context_is_copied_from_the_document() -> None:
    signed = add_eddsa_jcs_proof(VECTORS["unsigned"], SEED, _options(context=False))
    assert signed["proof"]["proofValue"] == VECTORS["signedJCS"]["proof"]["proofValue"]


def test_the_earlier_vector_without_proof_context_verifies() -> None:
    document = copy.deepcopy(VECTORS["signedJCS"])
    del document["proof"]["@context"]
    document["proof"]["proofValue"] = VECTORS["signedJCS_without_proof_context"]["proofValue"]
    assert verify_eddsa_jcs_proof(document, public_keys=KEYS)


def test_verifies_the_signed_vector() -> None:
    assert verify_eddsa_jcs_proof(VECTORS["signedJCS"], public_keys=KEYS)


def test_unresolvable_method_does_not_verify() -> None:
    assert not verify_eddsa_jcs_proof(VECTORS["signedJCS"])


def test_did_key_method_resolves_itself() -> None:
    signed = add_eddsa_jcs_proof(VECTORS["unsigned"], SEED, _options(did_key_method(DID)))
    assert verify_eddsa_jcs_proof(signed)
    assert proof_controller(signed) == DID


def _tamper(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(VECTORS["signedJCS"])
    target = document
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    return document


TAMPERED = [
    pytest.param(("credentialSubject", "alumniOf"), "Another School", id="subject"),
    pytest.param(("validFrom",), "2023-01-02T00:00:00Z", id="validFrom"),
    pytest.param(("proof", "created"), "2023-02-24T23:36:39Z", id="created"),
    pytest.param(("proof", "proofPurpose"), "authentication", id="purpose"),
    pytest.param(("proof", "cryptosuite"), "eddsa-rdfc-2022", id="cryptosuite"),
    pytest.param(("proof", "type"), "Ed25519Signature2020", id="type"),
    pytest.param(("proof", "@context"), ["https://www.w3.org/ns/credentials/v2"], id="context"),
    pytest.param(("@context",), ["https://www.w3.org/ns/credentials/v2"], id="doc-context"),
    pytest.param(("proof", "proofValue"), "z" + "1" * 88, id="proofValue"),
    pytest.param(("proof", "proofValue"), "u" + "A" * 86, id="not-base58"),
    pytest.param(("proof", "created"), "yesterday", id="bad-created"),
]


@pytest.mark.parametrize(("path", "value"), TAMPERED)
def test_tampered_copies_fail(path: tuple[str, ...], value: Any) -> None:
    assert not verify_eddsa_jcs_proof(_tamper(path, value), public_keys=KEYS)


def test_extra_field_fails() -> None:
    document = copy.deepcopy(VECTORS["signedJCS"])
    document["extra"] = True
    assert not verify_eddsa_jcs_proof(document, public_keys=KEYS)


def test_other_key_fails() -> None:
    signed = add_eddsa_jcs_proof(VECTORS["unsigned"], bytes(32), _options(did_key_method(DID)))
    assert not verify_eddsa_jcs_proof(signed)


@pytest.mark.parametrize("value", [None, [], "x", {"proof": None}, {"proof": []}])
def test_not_a_proof(value: Any) -> None:
    assert not verify_eddsa_jcs_proof(value)


def test_refuses_to_sign_twice() -> None:
    with pytest.raises(EvidenceError):
        add_eddsa_jcs_proof(VECTORS["signedJCS"], SEED, _options())


def test_a_context_appended_after_signing_is_not_covered_as_the_spec_says() -> None:
    document = copy.deepcopy(VECTORS["signedJCS"])
    document["@context"] = [*document["@context"], "https://example.org/later/v1"]
    assert verify_eddsa_jcs_proof(document, public_keys=KEYS)
    document["@context"] = list(reversed(document["@context"]))
    assert not verify_eddsa_jcs_proof(document, public_keys=KEYS)
