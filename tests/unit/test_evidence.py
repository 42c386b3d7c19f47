"""Issuer-signed evidence and the handshake: every field covered, every failure coded."""

from __future__ import annotations

import os
from typing import Any

import pytest

from broker.errors import EvidenceError
from broker.evidence import (
    attestation_from,
    bond_from,
    credential_from,
    sign_evidence,
    verify_evidence,
)
from broker.handshake import ChallengeBook, answer_challenge
from broker.identity import AgentKey

NOW = 1_795_000_000_000
ISSUER = AgentKey(bytes(range(32)))
AGENT = AgentKey(bytes(range(1, 33)))


def credential(**overrides: Any) -> dict[str, Any]:
    fields = {
        "id": "cred-1", "subject": AGENT.did, "organisation": "Acme",
        "issued_at": NOW - 1000, "expires_at": NOW + 60_000,
    }  # fmt: skip
    return sign_evidence(ISSUER, "credential", **{**fields, **overrides})


def test_a_valid_credential_verifies_and_maps_to_facts() -> None:
    facts = credential_from(verify_evidence(credential(), "credential", NOW))
    assert (facts.issuer, facts.subject, facts.organisation) == (ISSUER.did, AGENT.did, "Acme")
    assert facts.expires_at_ms == NOW + 60_000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "cred-2"),
        ("subject", AgentKey(bytes(32)).did),
        ("organisation", "Evil Corp"),
        ("issued_at", NOW - 999),
        ("expires_at", NOW + 60_001),
        ("issuer", AgentKey(bytes(range(2, 34))).did),
    ],
)
def test_changing_any_signed_field_breaks_the_signature(field: str, value: Any) -> None:
    tampered = {**credential(), field: value}
    with pytest.raises(EvidenceError) as error:
        verify_evidence(tampered, "credential", NOW)
    assert error.value.code == "evidence_bad_signature"


@pytest.mark.parametrize(
    ("document", "now", "code"),
    [
        (credential(expires_at=NOW), NOW, "evidence_expired"),
        (credential(issued_at=NOW + 5), NOW, "evidence_not_yet_valid"),
        ({**credential(), "extra": 1}, NOW, "evidence_malformed"),
        ({**credential(), "issued_at": True}, NOW, "evidence_malformed"),
        ({**credential(), "type": "trust-broker/bond"}, NOW, "evidence_wrong_type"),
        ({**credential(), "signature": "short"}, NOW, "evidence_bad_signature"),
        ({**credential(), "subject": "did:key:zNotAKey"}, NOW, "evidence_malformed"),
    ],
    ids=["expired", "future", "extra-field", "bool-time", "wrong-type", "bad-sig", "bad-did"],
)
def test_bad_evidence_is_refused_with_its_own_code(
    document: dict[str, Any], now: int, code: str
) -> None:
    with pytest.raises(EvidenceError) as error:
        verify_evidence(document, "credential", now)
    assert error.value.code == code


def test_a_credential_cannot_pass_as_an_attestation() -> None:
    with pytest.raises(EvidenceError) as error:
        verify_evidence(credential(), "attestation", NOW)
    assert error.value.code in ("evidence_malformed", "evidence_wrong_type")


def test_attestation_and_bond_round_trip() -> None:
    att = sign_evidence(
        ISSUER, "attestation", id="att-1", subject=AGENT.did, codebase_hash="sha256:aa",
        config_hash="sha256:bb", issued_at=NOW - 1, expires_at=NOW + 1,
    )  # fmt: skip
    assert attestation_from(verify_evidence(att, "attestation", NOW)).codebase_hash == "sha256:aa"
    bond = sign_evidence(
        ISSUER, "bond", id="b-1", subject=AGENT.did, amount_minor=500, currency="EUR",
        issued_at=NOW - 1, expires_at=NOW + 1,
    )  # fmt: skip
    assert bond_from(verify_evidence(bond, "bond", NOW)).amount_minor == 500
    with pytest.raises(EvidenceError):
        sign_evidence(ISSUER, "bond", id="b-2", subject=AGENT.did, amount_minor=5,
                      currency="XYZ", issued_at=NOW - 1, expires_at=NOW + 1)  # fmt: skip


# -- handshake ---------------------------------------------------------------------------


def test_handshake_proves_possession_once() -> None:
    book = ChallengeBook(ISSUER, ttl_ms=30_000, session_ms=3_600_000)
    challenge = book.issue(os.urandom(32), NOW)
    response = answer_challenge(AGENT, challenge, NOW + 10)
    proof = book.verify(response, NOW + 20)
    assert (proof.agent, proof.verified_ms, proof.expires_ms) == (
        AGENT.did,
        NOW + 20,
        NOW + 3_600_020,
    )
    with pytest.raises(EvidenceError) as again:
        book.verify(response, NOW + 30)
    assert again.value.code == "handshake_replay"


def test_an_expired_challenge_is_refused() -> None:
    book = ChallengeBook(ISSUER, ttl_ms=30_000)
    challenge = book.issue(os.urandom(32), NOW)
    response = answer_challenge(AGENT, challenge, NOW + 29_000)
    with pytest.raises(EvidenceError) as error:
        book.verify(response, NOW + 30_000)
    assert error.value.code == "handshake_expired"


def test_an_answer_signed_by_another_key_is_refused() -> None:
    book = ChallengeBook(ISSUER)
    response = answer_challenge(AGENT, book.issue(os.urandom(32), NOW), NOW)
    impostor = {**response, "agent": AgentKey(bytes(32)).did}
    with pytest.raises(EvidenceError) as error:
        book.verify(impostor, NOW)
    assert error.value.code == "handshake_bad_signature"


def test_the_agent_refuses_a_challenge_the_broker_did_not_sign() -> None:
    book = ChallengeBook(ISSUER)
    challenge = {**book.issue(os.urandom(32), NOW), "broker": AgentKey(bytes(32)).did}
    with pytest.raises(EvidenceError) as error:
        answer_challenge(AGENT, challenge, NOW)
    assert error.value.code == "handshake_bad_broker"


def test_pending_challenges_are_bounded_oldest_first() -> None:
    book = ChallengeBook(ISSUER, max_pending=3)
    challenges = [book.issue(os.urandom(32), NOW) for _ in range(4)]
    with pytest.raises(EvidenceError) as error:
        book.verify(answer_challenge(AGENT, challenges[0], NOW), NOW)
    assert error.value.code == "handshake_replay"
    assert book.verify(answer_challenge(AGENT, challenges[3], NOW), NOW).agent == AGENT.did
