"""Issuer-signed evidence and the handshake: every field covered, every failure coded."""

from __future__ import annotations

import os
from typing import Any

import pytest

from broker.core.evidence import (
    DOCUMENTS,
    attestation_from,
    bond_from,
    credential_from,
    sign_evidence,
    verify_evidence,
)
from broker.core.handshake import answer_challenge, check_response, make_challenge, make_result
from broker.core.identity import AgentKey
from broker.core.signing import signed_by
from broker.errors import EvidenceError

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

BROKER = AgentKey(bytes(range(3, 35)))


def challenge_for(agent: AgentKey, now: int = NOW) -> tuple[dict[str, Any], tuple[str, int]]:
    """A broker challenge and what the store keeps for it (agent, expiry)."""
    challenge = make_challenge(BROKER, agent.did, os.urandom(32), now, ttl_ms=30_000)
    return challenge, (agent.did, challenge["expires_at"])


def test_handshake_proves_possession_and_the_agent_can_check_the_result() -> None:
    challenge, pending = challenge_for(AGENT)
    response = answer_challenge(AGENT, challenge, NOW + 10, expected_broker=BROKER.did)
    proof = check_response(response, BROKER.did, pending, NOW + 20, session_ms=3_600_000)
    assert (proof.agent, proof.verified_ms, proof.expires_ms) == (
        AGENT.did,
        NOW + 20,
        NOW + 3_600_020,
    )
    result = make_result(BROKER, proof, challenge["challenge"])
    assert signed_by(result, BROKER.did) and result["agent"] == AGENT.did


def test_an_answered_or_unknown_challenge_is_refused() -> None:
    challenge, _ = challenge_for(AGENT)
    response = answer_challenge(AGENT, challenge, NOW)
    with pytest.raises(EvidenceError) as error:
        check_response(response, BROKER.did, None, NOW, session_ms=1)
    assert error.value.code == "handshake_replay"


def test_an_expired_challenge_is_refused() -> None:
    challenge, pending = challenge_for(AGENT)
    response = answer_challenge(AGENT, challenge, NOW + 29_000)
    with pytest.raises(EvidenceError) as error:
        check_response(response, BROKER.did, pending, NOW + 30_000, session_ms=1)
    assert error.value.code == "handshake_expired"


def test_an_answer_signed_by_another_key_is_refused() -> None:
    challenge, pending = challenge_for(AGENT)
    impostor = AgentKey(bytes(32))
    response = answer_challenge(impostor, challenge, NOW)
    with pytest.raises(EvidenceError) as error:
        check_response(response, BROKER.did, pending, NOW, session_ms=1)
    assert error.value.code == "handshake_bad_signature"


@pytest.mark.parametrize("field", ["challenge", "broker", "agent", "issued_at", "expires_at"])
def test_the_agent_refuses_a_challenge_whose_signed_fields_were_changed(field: str) -> None:
    challenge, _ = challenge_for(AGENT)
    altered = {**challenge, field: AgentKey(bytes(32)).did if field in ("broker", "agent") else 1}
    if field == "challenge":
        altered[field] = "00" * 32
    with pytest.raises(EvidenceError) as error:
        answer_challenge(AGENT, altered, NOW)
    assert error.value.code == "handshake_bad_broker"


def test_the_agent_can_pin_the_brokers_did() -> None:
    challenge, _ = challenge_for(AGENT)
    with pytest.raises(EvidenceError) as error:
        answer_challenge(AGENT, challenge, NOW, expected_broker=AgentKey(bytes(32)).did)
    assert error.value.code == "handshake_bad_broker"


@pytest.mark.parametrize(
    ("request_", "user_id", "told"),
    [
        ({"agent": "did:key:zA"}, "did:key:zA", "did:key:zA"),
        ({"agent": "did:key:zA"}, "did:key:zB", None),  # another login asking about A
        ({"agent": "did:key:zA"}, None, None),  # no validated login at all
        ({}, "did:key:zA", None),
        ({"agent": ["did:key:zA"]}, "did:key:zA", None),
    ],
)
def test_only_the_agents_own_login_is_told_about_it(
    request_: dict[str, Any], user_id: str | None, told: str | None
) -> None:
    from broker.core.handshake import requesting_agent

    assert requesting_agent(request_, user_id) == told


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"organisation": None}, "field 'organisation' must be str", id="missing"),
        pytest.param({"issued_at": True}, "field 'issued_at' must be int", id="bool-is-no-int"),
        pytest.param({"expires_at": float(NOW + 1)}, "field 'expires_at' must be int",
                     id="float-is-no-int"),
        pytest.param({"id": 7}, "field 'id' must be str", id="number-is-no-str"),
        pytest.param({"zeta": 1, "alpha": 2}, "unexpected field 'alpha'", id="extra-first"),
        pytest.param({"id": 7, "issued_at": "x"}, "field 'id' must be str",
                     id="first-field-in-order"),
    ],
)  # fmt: skip
def test_a_malformed_credential_says_which_field(change: dict[str, Any], message: str) -> None:
    document = {**credential(), **change}
    document = {k: v for k, v in document.items() if v is not None}
    with pytest.raises(EvidenceError) as error:
        verify_evidence(document, "credential", NOW)
    assert (error.value.code, str(error.value)) == ("evidence_malformed", message)


@pytest.mark.parametrize("kind", sorted(DOCUMENTS))
def test_every_evidence_model_requires_every_field_but_the_signature(kind: str) -> None:
    model = DOCUMENTS[kind]
    optional = {name for name, field in model.model_fields.items() if not field.is_required()}
    assert optional == {"signature"}
    assert model.model_config.get("extra") == "forbid" and model.model_config.get("strict")
