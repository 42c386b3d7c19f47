"""Portable trust (pure): TrustRecordCredentials, their checks, and the imported prior."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from broker.core.identity import AgentKey
from broker.core.policy import Policy
from broker.core.scoring.prior import blend, imported_prior, record_value
from broker.core.scoring.reputation import score_reputation
from broker.core.state import (
    Bond,
    DecayedCount,
    ImportedRecord,
    PeerState,
    TrustContext,
    TrustList,
)
from broker.core.statuslist import revoked_in, with_bit
from broker.errors import EvidenceError
from broker.federation.record import (
    identity_credential,
    identity_from,
    imported_from,
    record_subject,
    status_list_credential,
    status_list_id,
    trust_record,
)
from broker.federation.vc import iso_from_ms, issue_credential, ms_from_iso, verify_credential
from tests.unit.factories import DAY_MS, NOW, SENDER, sign_envelope

BROKER_A = AgentKey(bytes([21]) * 32)
BROKER_C = AgentKey(bytes([22]) * 32)
POLICY = Policy()
PRIOR = POLICY.reputation.prior
CEILING = POLICY.federation.ceiling
NOW_S = NOW // 1000 * 1000  # credentials state instants to the second


def _record(issuer: AgentKey = BROKER_A, **overrides: Any) -> ImportedRecord:
    fields: dict[str, Any] = {
        "credential_id": f"urn:uuid:{issuer.did[-6:]}", "issuer": issuer.did,
        "successes": 200.0, "failures": 0.0, "slashes": 0,
        "valid_from_ms": NOW, "valid_until_ms": NOW + 30 * DAY_MS,
    }  # fmt: skip
    fields.update(overrides)
    return ImportedRecord(**fields)


def _ctx(
    *records: ImportedRecord, weights: dict[str, float] | None = None, **peer: Any
) -> TrustContext:
    # SENDER is on the list too: its own records must still count for nothing.
    federation = frozenset({"federation"})
    issuers = TrustList(
        {BROKER_A.did: federation, BROKER_C.did: federation, SENDER.did: federation},
        weights if weights is not None else {BROKER_A.did: 1.0, BROKER_C.did: 1.0},
    )
    state = PeerState(did=SENDER.did, imported=records, **peer)
    return TrustContext(peer=state, recipient=None, issuers=issuers)


def _signed_record(now_ms: int = NOW_S, **subject: Any) -> dict[str, Any]:
    peer = PeerState(did=SENDER.did, successes=DecayedCount(50.0, now_ms))
    fields = record_subject(peer, "standard", now_ms, success_half_life_ms=30 * DAY_MS,
                            failure_half_life_ms=90 * DAY_MS)  # fmt: skip
    fields.update(subject)
    unsigned = trust_record(BROKER_A.did, fields, "urn:uuid:rec-1", 7, now_ms, 30 * DAY_MS)
    return issue_credential(BROKER_A, unsigned, now_ms)


# -- the credential ------------------------------------------------------------------------


def test_issued_record_verifies_and_carries_aggregates_only() -> None:
    document = _signed_record()
    verified = verify_credential(document, "TrustRecordCredential", NOW_S)
    assert verified.issuer == BROKER_A.did
    assert set(document["credentialSubject"]) == {
        "id", "type", "periodStart", "periodEnd", "interactions", "successes", "failures",
        "successRate", "incidents", "slashes", "tier",
    }  # fmt: skip
    record = imported_from(verified)
    assert (record.successes, record.failures, record.slashes) == (50.0, 0.0, 0)
    assert document["credentialStatus"]["statusListCredential"] == status_list_id(BROKER_A.did)


def test_record_summarises_stake_and_slashes() -> None:
    bond = Bond("bond-1", BROKER_C.did, 1000, "USD", NOW - DAY_MS, NOW + DAY_MS, slashed_minor=250)
    subject = record_subject(
        PeerState(did=SENDER.did, bond=bond, last_anomaly_ms=NOW), "probation", NOW,
        success_half_life_ms=DAY_MS, failure_half_life_ms=DAY_MS,
    )  # fmt: skip
    assert subject["stake"] == {"currency": "USD", "bondedMinor": 1000, "slashedMinor": 250}
    assert (subject["slashes"], subject["incidents"], subject["successRate"]) == (1, 1, None)
    assert subject["periodStart"] == iso_from_ms(NOW - DAY_MS)


def _refusal(document: Any, now_ms: int = NOW_S) -> str:
    with pytest.raises(EvidenceError) as caught:
        imported_from(verify_credential(document, "TrustRecordCredential", now_ms))
    return caught.value.code


def _resigned(document: dict[str, Any], key: AgentKey) -> dict[str, Any]:
    unsigned = {k: v for k, v in document.items() if k != "proof"}
    return issue_credential(key, unsigned, NOW_S)


def test_tampered_record_is_refused() -> None:
    document = _signed_record()
    document["credentialSubject"]["successes"] = 5000
    assert _refusal(document) == "evidence_bad_signature"


def test_record_signed_by_another_key_than_its_issuer_is_refused() -> None:
    assert _refusal(_resigned(_signed_record(), BROKER_C)) == "evidence_bad_signature"


def test_expired_and_future_records_are_refused() -> None:
    assert _refusal(_signed_record(), NOW_S + 31 * DAY_MS) == "evidence_expired"
    assert _refusal(_signed_record(), NOW_S - 1000) == "evidence_not_yet_valid"


@pytest.mark.parametrize(
    ("path", "value", "code"),
    [
        (("type",), ["VerifiableCredential"], "evidence_wrong_type"),
        (("@context",), ["https://www.w3.org/2018/credentials/v1"], "evidence_malformed"),
        (("issuer",), "https://broker.example", "evidence_malformed"),
        (("validUntil",), "next week", "evidence_malformed"),
        (("credentialSubject", "successes"), -1, "evidence_malformed"),
        (("credentialSubject", "slashes"), 0.5, "evidence_malformed"),
        (("credentialSubject", "id"), "did:web:example.com", "evidence_malformed"),
    ],
)
def test_malformed_records_are_refused(path: tuple[str, ...], value: Any, code: str) -> None:
    document = copy.deepcopy(_signed_record())
    target = document
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    assert _refusal(_resigned(document, BROKER_A)) == code


def test_status_list_credential_verifies_and_revokes() -> None:
    unsigned = status_list_credential(BROKER_A.did, with_bit(b"", 7), NOW_S, DAY_MS)
    document = issue_credential(BROKER_A, unsigned, NOW_S)
    verified = verify_credential(document, "BitstringStatusListCredential", NOW_S)
    assert revoked_in(_signed_record()["credentialStatus"], verified.document)


def test_identity_credential_becomes_a_credential() -> None:
    unsigned = identity_credential(BROKER_C, SENDER.did, "Acme Research", NOW_S, DAY_MS)
    verified = verify_credential(
        issue_credential(BROKER_C, unsigned, NOW_S), "IdentityCredential", NOW_S
    )
    credential = identity_from(verified)
    assert (credential.issuer, credential.subject, credential.organisation) == (
        BROKER_C.did, SENDER.did, "Acme Research"
    )  # fmt: skip
    assert credential.expires_at_ms == NOW_S + DAY_MS


def test_iso_round_trip() -> None:
    assert ms_from_iso(iso_from_ms(NOW_S), "t") == NOW_S
    assert iso_from_ms(0) == "1970-01-01T00:00:00Z"


# -- the prior -----------------------------------------------------------------------------


def _reputation(ctx: TrustContext) -> tuple[float, tuple[str, ...]]:
    result = score_reputation(sign_envelope(), ctx, POLICY, NOW)
    return result.score, result.reasons


def test_no_record_is_the_cold_start_prior() -> None:
    assert _reputation(_ctx()) == (PRIOR, ("reputation_cold_start",))


def test_long_clean_record_lifts_the_prior_up_to_the_ceiling() -> None:
    score, reasons = _reputation(_ctx(_record()))
    assert score == pytest.approx(CEILING)
    assert reasons == ("reputation_imported_prior",)


@pytest.mark.parametrize(
    ("overrides", "weights", "expected"),
    [
        ({}, {BROKER_A.did: 0.0}, PRIOR),  # an issuer trusted for nothing lends nothing
        ({"successes": 3.0}, None, None),  # a short record lends a little (checked below)
        ({"issuer": SENDER}, {SENDER.did: 1.0}, PRIOR),  # self-issued
        ({"valid_until_ms": NOW}, None, PRIOR),  # expired
        ({"valid_from_ms": NOW + 1}, None, PRIOR),  # not yet valid
    ],
)
def test_records_that_lend_little_or_nothing(
    overrides: dict[str, Any], weights: dict[str, float] | None, expected: float | None
) -> None:
    score, _ = _reputation(_ctx(_record(**overrides), weights=weights))
    if expected is None:
        assert PRIOR < score < CEILING
    else:
        assert score == pytest.approx(expected)


def test_issuer_not_on_the_federation_list_counts_for_nothing() -> None:
    ctx = _ctx(_record())
    ctx = dataclasses.replace(ctx, issuers=TrustList({BROKER_A.did: frozenset({"identity"})}))
    assert _reputation(ctx) == (PRIOR, ("reputation_cold_start",))


def test_revoked_record_counts_for_nothing() -> None:
    ctx = dataclasses.replace(
        _ctx(_record()), revoked_evidence=frozenset({_record().credential_id})
    )
    assert _reputation(ctx)[0] == PRIOR


def test_trust_weight_and_age_discount() -> None:
    full = record_value(_record(), POLICY, NOW)
    half_trust = imported_prior(
        _ctx(_record(successes=5.0), weights={BROKER_A.did: 0.5}), POLICY, NOW
    )
    full_trust = imported_prior(_ctx(_record(successes=5.0)), POLICY, NOW)
    assert half_trust is not None and full_trust is not None
    assert half_trust - PRIOR == pytest.approx((full_trust - PRIOR) / 2)
    aged = record_value(_record(), POLICY, NOW + POLICY.federation.age_half_life_ms)
    assert aged - PRIOR == pytest.approx((full - PRIOR) / 2)


def test_several_issuers_never_add_up_and_a_bad_record_counts() -> None:
    good, weak = _record(), _record(BROKER_C, successes=5.0)
    both = imported_prior(_ctx(good, weak), POLICY, NOW)
    assert both == imported_prior(_ctx(weak), POLICY, NOW)
    bad = _record(BROKER_C, successes=10.0, failures=20.0, slashes=1)
    with_bad = imported_prior(_ctx(good, bad), POLICY, NOW)
    assert with_bad is not None and with_bad < PRIOR
    # A bad record is not softened by distrust of its issuer.
    softened = imported_prior(
        _ctx(good, bad, weights={BROKER_A.did: 1.0, BROKER_C.did: 0.1}), POLICY, NOW
    )
    assert softened == with_bad


def test_the_ceiling_binds_every_issuer() -> None:
    policy = Policy.model_validate({"federation": {"ceiling": 0.4}})
    assert imported_prior(_ctx(_record()), policy, NOW) == pytest.approx(0.4)


def test_local_outcomes_soon_outweigh_the_prior() -> None:
    assert blend(0.55, 0.25, 0.0, POLICY) == pytest.approx(0.55)
    assert blend(0.55, 0.25, POLICY.federation.local_weight, POLICY) == pytest.approx(0.40)
    assert blend(0.55, 0.10, 95.0, POLICY) == pytest.approx(0.1225)
    failing = _ctx(_record(), failures=DecayedCount(10.0, NOW))
    assert _reputation(failing)[0] < PRIOR


@pytest.mark.parametrize(
    ("successes", "failures", "trust", "expected"),
    [(60.0, 0.0, 1.0, 0.55), (60.0, 0.0, 0.5, 0.52), (10.0, 20.0, 1.0, 0.10)],
)
def test_the_figures_docs_scoring_quotes(
    successes: float, failures: float, trust: float, expected: float
) -> None:
    ctx = _ctx(_record(successes=successes, failures=failures), weights={BROKER_A.did: trust})
    assert imported_prior(ctx, POLICY, NOW) == pytest.approx(expected, abs=0.005)
