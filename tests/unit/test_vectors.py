"""did:key and Ed25519 against published vectors (W3C CCG did:key, C2SP Wycheproof)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import base58
import pytest

from broker.core.identity import (
    AgentKey,
    did_from_public_key,
    public_key_from_did,
    verify_signature,
)
from broker.errors import IdentityError

VECTORS = Path(__file__).parent.parent / "vectors"
DID_KEY: dict[str, Any] = json.loads((VECTORS / "did-key-ed25519.json").read_text())
WYCHEPROOF: dict[str, Any] = json.loads((VECTORS / "wycheproof-ed25519.json").read_text())


def _published_key(entry: dict[str, Any]) -> bytes:
    pair = entry["verificationKeyPair"]
    if "publicKeyBase58" in pair:
        return bytes(base58.b58decode(pair["publicKeyBase58"]))
    x = pair["publicKeyJwk"]["x"]
    return base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))


DID_CASES = [pytest.param(did, entry, id=did[-8:]) for did, entry in DID_KEY.items()]


def test_vector_file_has_both_key_encodings() -> None:
    pairs = [entry["verificationKeyPair"] for entry in DID_KEY.values()]
    assert any("publicKeyBase58" in pair for pair in pairs)
    assert any("publicKeyJwk" in pair for pair in pairs)


@pytest.mark.parametrize(("did", "entry"), DID_CASES)
def test_seed_yields_published_did(did: str, entry: dict[str, Any]) -> None:
    key = AgentKey(bytes.fromhex(entry["seed"]))
    assert key.did == did
    assert key.public_key == _published_key(entry)


@pytest.mark.parametrize(("did", "entry"), DID_CASES)
def test_did_names_published_key(did: str, entry: dict[str, Any]) -> None:
    assert public_key_from_did(did) == _published_key(entry)


@pytest.mark.parametrize(("did", "entry"), DID_CASES)
def test_did_round_trips_through_public_key(did: str, entry: dict[str, Any]) -> None:
    assert did_from_public_key(public_key_from_did(did)) == did
    assert did_from_public_key(_published_key(entry)) == did


@pytest.mark.parametrize(("did", "entry"), DID_CASES)
def test_vector_key_signs_and_verifies(did: str, entry: dict[str, Any]) -> None:
    key = AgentKey(bytes.fromhex(entry["seed"]))
    signature = key.sign(b"hello")
    assert verify_signature(public_key_from_did(did), b"hello", signature)
    assert not verify_signature(public_key_from_did(did), b"hellO", signature)


def _wycheproof_cases() -> list[Any]:
    cases = []
    for group in WYCHEPROOF["testGroups"]:
        public_key = bytes.fromhex(group["publicKey"]["pk"])
        for test in group["tests"]:
            cases.append(
                pytest.param(
                    public_key,
                    bytes.fromhex(test["msg"]),
                    bytes.fromhex(test["sig"]),
                    test["result"],
                    id=f"tc{test['tcId']}-{test['result']}",
                )
            )
    return cases


WYCHEPROOF_CASES = _wycheproof_cases()


def test_every_wycheproof_case_is_collected() -> None:
    assert len(WYCHEPROOF_CASES) == WYCHEPROOF["numberOfTests"] == 151


@pytest.mark.parametrize(("public_key", "message", "signature", "result"), WYCHEPROOF_CASES)
def test_wycheproof(public_key: bytes, message: bytes, signature: bytes, result: str) -> None:
    # Wycheproof's "acceptable" would need a judgement call; this file has none.
    assert result in {"valid", "invalid"}
    assert verify_signature(public_key, message, signature) is (result == "valid")


def _x25519_dids() -> list[Any]:
    return [
        pytest.param("did:key:" + entry["keyAgreementKeyPair"]["id"].split("#")[-1], id=did[-8:])
        for did, entry in DID_KEY.items()
    ]


@pytest.mark.parametrize("did", _x25519_dids())
def test_x25519_did_from_vectors_is_refused(did: str) -> None:
    # Real did:key identifiers, but of X25519 key-agreement keys (multicodec 0xec01).
    assert did.startswith("did:key:z6LS")
    with pytest.raises(IdentityError, match="ed25519-pub"):
        public_key_from_did(did)


_GOOD_KEY = bytes(range(32))
_GOOD_DID = did_from_public_key(_GOOD_KEY)


def _b58_did(payload: bytes) -> str:
    return "did:key:z" + base58.b58encode(payload).decode("ascii")


MALFORMED_DIDS = [
    pytest.param("", id="empty"),
    pytest.param("did:key:", id="no-multibase"),
    pytest.param("did:key:z", id="empty-key"),
    pytest.param(_GOOD_DID.replace("did:key:", "did:web:"), id="wrong-method"),
    pytest.param(_GOOD_DID.replace("did:key:z", "did:key:m"), id="wrong-multibase-prefix"),
    pytest.param(_GOOD_DID.replace("did:", "DID:"), id="upper-case-scheme"),
    pytest.param(_GOOD_DID[:-1] + "0", id="not-base58-zero"),
    pytest.param(_GOOD_DID[:-1] + "l", id="not-base58-ell"),
    pytest.param(_GOOD_DID[:-1] + "é", id="not-base58-non-ascii"),
    pytest.param(_b58_did(b"\xec\x01" + _GOOD_KEY), id="x25519-multicodec"),
    pytest.param(_b58_did(b"\xe7\x01" + bytes(33)), id="secp256k1-multicodec"),
    pytest.param(_b58_did(b"\xed\x01" + _GOOD_KEY[:31]), id="key-31-bytes"),
    pytest.param(_b58_did(b"\xed\x01" + _GOOD_KEY + b"\x00"), id="key-33-bytes"),
    pytest.param(_b58_did(_GOOD_KEY), id="no-multicodec"),
    pytest.param("did:key:z1" + _GOOD_DID[len("did:key:z") :], id="non-canonical-leading-1"),
    pytest.param(_GOOD_DID + "1" * 20, id="overlong"),
    pytest.param("did:key:z" + "2" * 200, id="overlong-base58"),
    pytest.param(" " + _GOOD_DID, id="leading-space"),
    pytest.param(_GOOD_DID + "\n", id="trailing-newline"),
]


def test_good_did_used_for_malformed_variants_is_valid() -> None:
    assert public_key_from_did(_GOOD_DID) == _GOOD_KEY


@pytest.mark.parametrize("did", MALFORMED_DIDS)
def test_malformed_did_is_refused(did: str) -> None:
    with pytest.raises(IdentityError):
        public_key_from_did(did)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(31), id="31-bytes"),
        pytest.param(bytes(33), id="33-bytes"),
        pytest.param(bytearray(32), id="bytearray"),
    ],
)
def test_did_from_public_key_refuses_wrong_key(raw: bytes) -> None:
    with pytest.raises(IdentityError):
        did_from_public_key(raw)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33)], ids=["0", "31", "33"])
def test_agent_key_refuses_wrong_seed_length(seed: bytes) -> None:
    with pytest.raises(IdentityError):
        AgentKey(seed)


def test_agent_key_repr_hides_seed() -> None:
    key = AgentKey(bytes([0xAB]) * 32)
    assert repr(key) == f"AgentKey(did={key.did!r})"


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        pytest.param(bytes(31), bytes(64), id="short-key"),
        pytest.param(bytes(32), bytes(63), id="short-signature"),
        pytest.param(bytes(32), bytes(65), id="long-signature"),
    ],
)
def test_verify_refuses_wrong_lengths(public_key: bytes, signature: bytes) -> None:
    assert verify_signature(public_key, b"", signature) is False
