"""The five dimensions one at a time, the weakest dimension, and decide() as a whole."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from broker.core.decision import Action, Tier
from broker.core.envelope import DecodedEnvelope, Envelope, PaymentIntent
from broker.core.policy import DIMENSIONS, Policy, load_policy
from broker.core.scoring import decide, under_observation
from broker.core.scoring.behavioral import score_behavioral
from broker.core.scoring.compliance import score_compliance
from broker.core.scoring.identity import score_identity
from broker.core.scoring.reputation import score_reputation
from broker.core.scoring.stake import score_stake
from broker.core.scoring.tiers import REMEDIATION, weakest_dimension
from broker.core.state import Bond, DecayedCount, PeerState, TrustContext, TrustList

from .factories import (
    CUSTODIAN,
    DAY_MS,
    DEFAULT_POLICY,
    ISSUER,
    MINUTE_MS,
    NOW,
    OTHER,
    RECIPIENT,
    SECOND_MS,
    SENDER,
    TRUST_LIST,
    UNTRUSTED_ISSUER,
    anomalous_peer,
    attestation,
    bond,
    context,
    credential,
    decoded,
    identity_verified_peer,
    manifest,
    new_peer,
    pact,
    payment_envelope,
    peer,
    possession,
    recipient,
    sign_envelope,
    trusted_peer,
)

DATA = sign_envelope()
HOUR_MS = 60 * MINUTE_MS
SUCCESS_HALF_LIFE = DEFAULT_POLICY.reputation.success_half_life_ms
FAILURE_HALF_LIFE = DEFAULT_POLICY.reputation.failure_half_life_ms
VERIFIED: dict[str, Any] = {**possession(), "credential": credential()}

# --- identity ---------------------------------------------------------------------------


def _cred(**fields: Any) -> dict[str, Any]:
    """Peer fields: a current possession proof and a credential with `fields` changed."""
    return {**possession(), "credential": credential(**fields)}


def _att(**fields: Any) -> dict[str, Any]:
    """Peer fields: verified, plus an attestation with `fields` changed."""
    return {**VERIFIED, "attestation": attestation(**fields)}


UNVERIFIED = ("identity_unverified", "possession_required")
CODE_A, CODE_C = "sha256:" + "a" * 64, "sha256:" + "c" * 64
REVOKED_CRED = {"revoked_evidence": frozenset({"cred-1"})}

# peer fields, context fields, score, reasons
IDENTITY = [
    pytest.param({}, {}, 0.20, ("identity_unverified",), id="nothing-known"),
    pytest.param({"credential": credential()}, {}, 0.20, UNVERIFIED, id="credential-only"),
    pytest.param(
        {**_cred(), **possession(NOW - 7 * DAY_MS)},
        {},
        0.20,
        UNVERIFIED,
        id="possession-proof-expired",
    ),
    pytest.param(
        {**_cred(), "possession_expires_ms": None},
        {},
        0.20,
        UNVERIFIED,
        id="possession-without-expiry",
    ),
    pytest.param(
        {**_cred(), "last_anomaly_ms": NOW - MINUTE_MS},
        {},
        0.20,
        UNVERIFIED,
        id="possession-older-than-anomaly",
    ),
    pytest.param(
        {**_cred(), "last_anomaly_ms": NOW - 2 * DAY_MS},
        {},
        0.90,
        ("identity_verified", "attestation_missing"),
        id="possession-newer-than-anomaly",
    ),
    pytest.param(
        possession(), {}, 0.40, ("identity_possession", "credential_missing"), id="possession-only"
    ),
    pytest.param(
        _cred(expires_at_ms=NOW),
        {},
        0.40,
        ("identity_possession", "credential_expired"),
        id="credential-expired",
    ),
    pytest.param(
        _cred(issued_at_ms=NOW + 1),
        {},
        0.40,
        ("identity_possession", "credential_expired"),
        id="credential-not-yet-valid",
    ),
    pytest.param(
        _cred(issuer=UNTRUSTED_ISSUER),
        {},
        0.40,
        ("identity_possession", "credential_issuer_untrusted"),
        id="untrusted-issuer",
    ),
    pytest.param(
        _cred(),
        {"issuers": TrustList()},
        0.40,
        ("identity_possession", "credential_issuer_untrusted"),
        id="empty-trust-list",
    ),
    pytest.param(
        _cred(),
        {"issuers": TrustList({ISSUER: frozenset({"stake", "attestation"})})},
        0.40,
        ("identity_possession", "credential_issuer_untrusted"),
        id="issuer-trusted-for-other-roles-only",
    ),
    pytest.param(
        _cred(issuer=SENDER.did),
        {"issuers": TrustList({SENDER.did: frozenset({"identity"})})},
        0.40,
        ("identity_possession", "credential_subject_mismatch"),
        id="self-issued-even-by-a-trusted-issuer",
    ),
    pytest.param(
        _cred(),
        REVOKED_CRED,
        0.40,
        ("identity_possession", "credential_revoked"),
        id="credential-revoked",
    ),
    pytest.param(
        _cred(subject=OTHER.did),
        {},
        0.40,
        ("identity_possession", "credential_subject_mismatch"),
        id="credential-mismatch",
    ),
    pytest.param(_cred(), {}, 0.90, ("identity_verified", "attestation_missing"), id="verified"),
    pytest.param(_att(), {}, 1.00, ("identity_attested",), id="attested"),
    pytest.param(
        {**_att(), "expected_codebase_hash": CODE_A},
        {},
        1.00,
        ("identity_attested",),
        id="attested-expected-code",
    ),
    pytest.param(
        {**_att(), "expected_codebase_hash": CODE_C},
        {},
        0.90,
        ("identity_verified", "attestation_mismatch"),
        id="attested-other-code",
    ),
    pytest.param(
        _att(expires_at_ms=NOW),
        {},
        0.90,
        ("identity_verified", "attestation_expired"),
        id="attestation-expired",
    ),
    pytest.param(
        _att(),
        {"revoked_evidence": frozenset({"att-1"})},
        0.90,
        ("identity_verified", "attestation_revoked"),
        id="attestation-revoked",
    ),
    pytest.param(
        _att(issuer=UNTRUSTED_ISSUER),
        {},
        0.90,
        ("identity_verified", "attestation_untrusted"),
        id="attestation-untrusted",
    ),
    pytest.param(
        _att(subject=OTHER.did),
        {},
        0.90,
        ("identity_verified", "attestation_untrusted"),
        id="attestation-other-did",
    ),
    pytest.param(
        _att(),
        REVOKED_CRED,
        0.40,
        ("identity_possession", "credential_revoked"),
        id="attestation-needs-credential",
    ),
]


@pytest.mark.parametrize(("peer_fields", "ctx_fields", "score", "reasons"), IDENTITY)
def test_identity(
    peer_fields: dict[str, Any], ctx_fields: dict[str, Any], score: float, reasons: tuple[str, ...]
) -> None:
    result = score_identity(DATA, context(peer(**peer_fields), **ctx_fields), DEFAULT_POLICY, NOW)
    assert result.score == score
    assert result.reasons == reasons


# --- reputation -------------------------------------------------------------------------

REPUTATION = [
    pytest.param(DecayedCount(), DecayedCount(), 0.25, ("reputation_cold_start",), id="none"),
    pytest.param(DecayedCount(11.0, NOW), DecayedCount(), 0.575, (), id="half-saturation"),
    pytest.param(
        DecayedCount(11.0, NOW - 30 * DAY_MS),
        DecayedCount(),
        0.25 + 0.65 * 5.5 / 16.5,
        (),
        id="one-half-life-old",
    ),
    pytest.param(DecayedCount(1e15, NOW), DecayedCount(), 0.9, (), id="ceiling"),
    pytest.param(
        DecayedCount(),
        DecayedCount(1.0, NOW),
        0.25 * 0.85,
        ("reputation_failures",),
        id="one-failure",
    ),
    pytest.param(
        DecayedCount(),
        DecayedCount(1.0, NOW - 90 * DAY_MS),
        0.25 * 0.85**0.5,
        ("reputation_cold_start", "reputation_failures"),
        id="failure-one-half-life-old",
    ),
    pytest.param(
        DecayedCount(11.0, NOW),
        DecayedCount(2.0, NOW),
        0.575 * 0.85**1,
        ("reputation_failures",),
        id="two-failures-weigh-half-against-11-successes",
    ),
    pytest.param(
        DecayedCount(33.0, NOW),
        DecayedCount(8.0, NOW),
        (0.25 + 0.65 * 33 / 44) * 0.85**2,
        ("reputation_failures",),
        id="a-busy-agent-failing-sometimes-keeps-its-standing",
    ),
]


@pytest.mark.parametrize(("successes", "failures", "score", "reasons"), REPUTATION)
def test_reputation(
    successes: DecayedCount, failures: DecayedCount, score: float, reasons: tuple[str, ...]
) -> None:
    ctx = context(peer(successes=successes, failures=failures))
    result = score_reputation(DATA, ctx, DEFAULT_POLICY, NOW)
    assert result.score == pytest.approx(score, rel=1e-12)
    assert result.reasons == reasons


@pytest.mark.parametrize(
    ("successes", "factor"),
    [(0.0, 0.85), (1.0, 0.85 ** (11 / 12)), (11.0, 0.85**0.5), (60.0, 0.85 ** (11 / 71))],
)
def test_one_verified_failure_costs_15_percent_weighed_against_successes(
    successes: float, factor: float
) -> None:
    # Without a record a failure costs the seeds' 15 %; against a record it costs its
    # share of the evidence, so a steady, low failure rate never sinks a busy agent.
    clean = peer(successes=DecayedCount(successes, NOW))
    failed = replace(clean, failures=DecayedCount(1.0, NOW))
    before = score_reputation(DATA, context(clean), DEFAULT_POLICY, NOW).score
    after = score_reputation(DATA, context(failed), DEFAULT_POLICY, NOW).score
    assert after / before == pytest.approx(factor, rel=1e-12)


def test_decayed_count_halves_every_half_life() -> None:
    count = DecayedCount(8.0, NOW)
    assert count.at(NOW, DAY_MS) == 8.0
    assert count.at(NOW + DAY_MS, DAY_MS) == 4.0
    assert count.at(NOW + 3 * DAY_MS, DAY_MS) == 1.0
    # A reader whose clock is behind never sees the count grow.
    assert count.at(NOW - DAY_MS, DAY_MS) == 8.0


def test_decayed_count_add_folds_decay_first() -> None:
    count = DecayedCount(8.0, NOW).add(1.0, NOW + DAY_MS, DAY_MS)
    assert count == DecayedCount(5.0, NOW + DAY_MS)
    # An event stamped before the last fold does not move the fold instant back.
    assert DecayedCount(8.0, NOW).add(1.0, NOW - DAY_MS, DAY_MS) == DecayedCount(9.0, NOW)


events_st = st.lists(
    st.tuples(st.integers(min_value=0, max_value=60 * DAY_MS), st.floats(0.0, 5.0)),
    min_size=1,
    max_size=30,
)


@given(events_st, st.lists(st.integers(min_value=0, max_value=60 * DAY_MS), max_size=30))
def test_decay_depends_on_elapsed_time_not_on_how_often_it_is_folded(
    events: list[tuple[int, float]], reads: list[int]
) -> None:
    # The same outcomes, folded only when they happen or also at every extra instant the
    # peer was seen (a store writing the decayed value back on each message): same value.
    hl = SUCCESS_HALF_LIFE
    timeline = sorted([(NOW + at, amount) for at, amount in events])
    sparse = DecayedCount(0.0, NOW)
    for at, amount in timeline:
        sparse = sparse.add(amount, at, hl)
    busy_timeline = sorted(timeline + [(NOW + at, 0.0) for at in reads])
    busy = DecayedCount(0.0, NOW)
    for at, amount in busy_timeline:
        busy = busy.add(amount, at, hl)
    end = NOW + 90 * DAY_MS
    assert busy.at(end, hl) == pytest.approx(sparse.at(end, hl), rel=1e-9, abs=1e-12)


def test_recent_success_counts_more_than_an_old_one() -> None:
    history = DecayedCount(5.0, NOW - 60 * DAY_MS)
    success_now = history.add(1.0, NOW, SUCCESS_HALF_LIFE)
    success_long_ago = history.add(1.0, NOW - 60 * DAY_MS, SUCCESS_HALF_LIFE)
    recent = score_reputation(DATA, context(peer(successes=success_now)), DEFAULT_POLICY, NOW)
    old = score_reputation(DATA, context(peer(successes=success_long_ago)), DEFAULT_POLICY, NOW)
    baseline = score_reputation(DATA, context(peer(successes=history)), DEFAULT_POLICY, NOW)
    assert recent.score > old.score > baseline.score


def test_failures_are_remembered_longer_than_successes() -> None:
    month_ago = DecayedCount(1.0, NOW - 30 * DAY_MS)
    assert month_ago.at(NOW, FAILURE_HALF_LIFE) > month_ago.at(NOW, SUCCESS_HALF_LIFE)


# --- behavioral -------------------------------------------------------------------------

BEHAVIOR = [
    pytest.param({}, 0.5, ("behavior_no_baseline",), id="no-baseline"),
    pytest.param({"clean_streak": 5}, 1 - 0.5 / math.e, (), id="five-clean"),
    pytest.param({"clean_streak": 20}, 1 - 0.5 * math.exp(-4), (), id="twenty-clean"),
    pytest.param(
        {"clean_streak": 60, "last_anomaly_ms": NOW - SECOND_MS},
        0.0,
        ("under_observation",),
        id="just-after-anomaly",
    ),
    pytest.param(
        {"clean_streak": 20, "last_anomaly_ms": NOW - DAY_MS},
        1 - 0.5 * math.exp(-4),
        (),
        id="recovered",
    ),
]


@pytest.mark.parametrize(("peer_fields", "score", "reasons"), BEHAVIOR)
def test_behavioral(peer_fields: dict[str, Any], score: float, reasons: tuple[str, ...]) -> None:
    result = score_behavioral(DATA, context(peer(**peer_fields)), DEFAULT_POLICY, NOW)
    assert result.score == pytest.approx(score, rel=1e-12)
    assert result.reasons == reasons


# since the anomaly (ms), clean messages since, still under observation?
OBSERVATION = [
    pytest.param(0, 1_000, True, id="clean-but-too-soon"),
    pytest.param(DAY_MS - 1, 20, True, id="period-not-over"),
    pytest.param(DAY_MS, 19, True, id="one-clean-message-short"),
    pytest.param(30 * DAY_MS, 0, True, id="long-ago-but-silent"),
    pytest.param(DAY_MS, 20, False, id="both-met-exactly"),
    pytest.param(2 * DAY_MS, 100, False, id="both-met"),
]


@pytest.mark.parametrize(("elapsed", "clean", "observed"), OBSERVATION)
def test_observation_ends_only_after_period_and_clean_messages(
    elapsed: int, clean: int, observed: bool
) -> None:
    state = peer(last_anomaly_ms=NOW - elapsed, clean_streak=clean)
    assert under_observation(state, DEFAULT_POLICY, NOW) is observed
    behavioral = score_behavioral(DATA, context(state), DEFAULT_POLICY, NOW)
    assert (behavioral.score == 0.0) is observed


def test_no_anomaly_means_no_observation() -> None:
    assert under_observation(peer(), DEFAULT_POLICY, NOW) is False


# --- compliance -------------------------------------------------------------------------

COMPLIANCE = [
    pytest.param(DATA, {}, {}, 0.5, "compliance_no_evidence", id="no-evidence"),
    pytest.param(
        DATA,
        {},
        {"recipient": recipient(accepted_kinds=frozenset({"request"}))},
        0.0,
        "kind_not_accepted",
        id="kind-not-accepted",
    ),
    pytest.param(
        DATA,
        {},
        {"recipient": recipient(accepted_kinds=frozenset({"data"}))},
        0.5,
        "compliance_no_evidence",
        id="kind-accepted",
    ),
    pytest.param(
        DATA,
        {"manifest": manifest("report")},
        {},
        0.2,
        "kind_outside_manifest",
        id="kind-outside-manifest",
    ),
    pytest.param(
        DATA,
        {"manifest": manifest("report")},
        {"pact": pact()},
        0.2,
        "kind_outside_manifest",
        id="pact-cannot-excuse-manifest",
    ),
    pytest.param(
        DATA,
        {"manifest": manifest("data")},
        {},
        0.5,
        "manifest_in_scope",
        id="manifest-in-scope-raises-nothing",
    ),
    pytest.param(
        DATA,
        {"manifest": manifest("report", expires_at_ms=NOW)},
        {},
        0.5,
        "compliance_no_evidence",
        id="expired-manifest-no-longer-narrows",
    ),
    pytest.param(DATA, {}, {"pact": pact()}, 1.0, "pact_in_scope", id="pact-in-scope"),
    pytest.param(
        DATA,
        {"manifest": manifest("data")},
        {"pact": pact()},
        1.0,
        "pact_in_scope",
        id="pact-beats-manifest",
    ),
    pytest.param(
        DATA,
        {"manifest": manifest("data")},
        {"pact": pact(expires_at_ms=NOW)},
        0.5,
        "manifest_in_scope",
        id="expired-pact-falls-back-to-manifest",
    ),
    pytest.param(
        DATA,
        {},
        {"pact": pact(kinds=frozenset({"report"}))},
        0.5,
        "compliance_no_evidence",
        id="pact-out-of-scope",
    ),
    pytest.param(
        payment_envelope("1000.00"),
        {},
        {"pact": pact()},
        1.0,
        "pact_in_scope",
        id="payment-at-pact-limit",
    ),
    pytest.param(
        payment_envelope("1000.01"),
        {},
        {"pact": pact()},
        0.5,
        "compliance_no_evidence",
        id="payment-over-pact-limit",
    ),
    pytest.param(
        payment_envelope("5", "EUR"),
        {},
        {"pact": pact()},
        0.5,
        "compliance_no_evidence",
        id="payment-other-currency",
    ),
    pytest.param(
        payment_envelope("5"),
        {},
        {"pact": pact(currency=None)},
        0.5,
        "compliance_no_evidence",
        id="pact-without-payments",
    ),
    pytest.param(
        sign_envelope(data_classes=("pii",)),
        {},
        {"pact": pact()},
        1.0,
        "pact_in_scope",
        id="label-in-pact",
    ),
    pytest.param(
        sign_envelope(data_classes=("pii", "health")),
        {},
        {"pact": pact()},
        0.5,
        "compliance_no_evidence",
        id="label-outside-pact",
    ),
    pytest.param(
        DATA,
        {},
        {"pact": pact(sender=OTHER.did)},
        0.5,
        "compliance_no_evidence",
        id="pact-of-another-sender",
    ),
]


@pytest.mark.parametrize(("envelope", "peer_fields", "ctx_fields", "score", "reason"), COMPLIANCE)
def test_compliance(
    envelope: Envelope,
    peer_fields: dict[str, Any],
    ctx_fields: dict[str, Any],
    score: float,
    reason: str,
) -> None:
    result = score_compliance(
        envelope, context(peer(**peer_fields), **ctx_fields), DEFAULT_POLICY, NOW
    )
    assert (result.score, result.reasons) == (score, (reason,))


# --- stake ------------------------------------------------------------------------------

RATED = load_policy({"currency": {"reference": "USD", "rates": {"USD": "1", "EUR": "1.10",
                                                                 "JPY": "0.0068"}}})  # fmt: skip

STAKE = [
    pytest.param(None, DATA, DEFAULT_POLICY, 0.0, ("stake_none",), id="none"),
    pytest.param(bond(0), DATA, DEFAULT_POLICY, 0.0, ("stake_none",), id="zero-bond"),
    pytest.param(bond(500_00), DATA, DEFAULT_POLICY, 0.5, ("stake_partial",), id="partial"),
    pytest.param(bond(1_000_00), DATA, DEFAULT_POLICY, 1.0, (), id="full"),
    pytest.param(bond(5_000_00), DATA, DEFAULT_POLICY, 1.0, (), id="more-than-full"),
    pytest.param(
        bond(2_000_00, slashed_minor=1_500_00),
        DATA,
        DEFAULT_POLICY,
        0.5,
        ("stake_partial",),
        id="slashed-part-no-longer-held",
    ),
    pytest.param(
        bond(issuer=UNTRUSTED_ISSUER),
        DATA,
        DEFAULT_POLICY,
        0.0,
        ("stake_issuer_untrusted",),
        id="issuer-not-on-the-list",
    ),
    pytest.param(
        bond(issuer=ISSUER),
        DATA,
        DEFAULT_POLICY,
        0.0,
        ("stake_issuer_untrusted",),
        id="identity-issuer-is-no-custodian",
    ),
    pytest.param(
        bond(issuer=SENDER.did),
        DATA,
        DEFAULT_POLICY,
        0.0,
        ("stake_issuer_untrusted",),
        id="self-issued",
    ),
    pytest.param(
        bond(expires_at_ms=NOW), DATA, DEFAULT_POLICY, 0.0, ("stake_expired",), id="expired"
    ),
    pytest.param(
        bond(issued_at_ms=NOW + 1),
        DATA,
        DEFAULT_POLICY,
        0.0,
        ("stake_expired",),
        id="not-yet-valid",
    ),
    pytest.param(
        bond(1_000_00, "EUR"),
        DATA,
        DEFAULT_POLICY,
        0.0,
        ("stake_currency_unrated",),
        id="bond-currency-without-rate",
    ),
    pytest.param(bond(1_000_00, "EUR"), DATA, RATED, 1.0, (), id="eur-bond-at-the-rate"),
    pytest.param(
        bond(100_000, "JPY"), DATA, RATED, 0.68, ("stake_partial",), id="jpy-bond-at-the-rate"
    ),
    pytest.param(
        bond(1_000_00),
        payment_envelope("999.99"),
        DEFAULT_POLICY,
        1.0,
        (),
        id="payment-within-coverage",
    ),
    pytest.param(
        bond(1_000_00),
        payment_envelope("2000"),
        DEFAULT_POLICY,
        0.5,
        ("stake_partial",),
        id="payment-doubles-exposure",
    ),
    pytest.param(
        bond(1_000_00),
        payment_envelope("1000", "EUR"),
        RATED,
        1000 / 1100,
        ("stake_partial",),
        id="payment-converted-to-the-reference",
    ),
    pytest.param(
        bond(1_000_00),
        payment_envelope("10", "EUR"),
        DEFAULT_POLICY,
        0.0,
        ("stake_currency_unrated",),
        id="payment-currency-without-rate",
    ),
]


@pytest.mark.parametrize(("bond_", "envelope", "policy", "score", "reasons"), STAKE)
def test_stake(
    bond_: Bond | None, envelope: Envelope, policy: Policy, score: float, reasons: tuple[str, ...]
) -> None:
    result = score_stake(envelope, context(peer(bond=bond_)), policy, NOW)
    assert result.score == pytest.approx(score)
    assert result.reasons == reasons


def test_a_revoked_bond_stops_counting() -> None:
    ctx = context(peer(bond=bond()), revoked_evidence=frozenset({"bond-1"}))
    assert score_stake(DATA, ctx, DEFAULT_POLICY, NOW).reasons == ("stake_revoked",)


# --- weakest dimension, remediation, the decision record -----------------------------------


def test_weakest_dimension_weighs_the_shortfall() -> None:
    # Stake is lowest, but identity's shortfall costs more composite (0.30 x 0.5 > 0.10 x 1).
    scores = {
        "identity": 0.5,
        "reputation": 1.0,
        "compliance": 1.0,
        "behavioral": 1.0,
        "stake": 0.0,
    }
    assert weakest_dimension(scores, DEFAULT_POLICY) == "identity"
    scores["identity"] = 0.7
    assert weakest_dimension(scores, DEFAULT_POLICY) == "stake"


@pytest.mark.parametrize(
    ("stage", "weakest", "remediation"),
    [
        pytest.param(new_peer, "identity", REMEDIATION["identity"], id="blocked-new-peer"),
        pytest.param(
            identity_verified_peer,
            "reputation",
            REMEDIATION["reputation"],
            id="probation-still-told-what-to-do",
        ),
        pytest.param(anomalous_peer, "identity", REMEDIATION["identity"], id="after-anomaly"),
        pytest.param(trusted_peer, "compliance", "none needed", id="trusted-delivered"),
    ],
)
def test_remediation_names_the_weakest_dimension(
    stage: Any, weakest: str, remediation: str
) -> None:
    decision = decide(decoded(DATA), context(stage()), DEFAULT_POLICY, NOW)
    assert decision.weakest == weakest
    assert decision.remediation == remediation


def test_remediation_covers_every_dimension() -> None:
    assert set(REMEDIATION) == set(DIMENSIONS)


def test_scored_decision_lists_route_reason_then_dimension_reasons() -> None:
    decision = decide(decoded(DATA), context(new_peer()), DEFAULT_POLICY, NOW)
    assert decision.reasons == (
        "insufficient_trust",
        "identity_unverified",
        "reputation_cold_start",
        "compliance_no_evidence",
        "behavior_no_baseline",
        "stake_none",
    )
    assert set(decision.dimensions) == set(DIMENSIONS)
    assert decision.gate is None


@pytest.mark.parametrize(
    "ctx",
    [
        pytest.param(context(trusted_peer()), id="scored"),
        pytest.param(context(trusted_peer(), replayed=True), id="gated"),
    ],
)
def test_decision_to_dict_is_json(ctx: TrustContext) -> None:
    decision = decide(decoded(DATA), ctx, DEFAULT_POLICY, NOW)
    data = decision.to_dict()
    assert orjson.loads(orjson.dumps(data)) == data
    assert data["action"] == decision.action.value
    assert data["tier"] == decision.tier.value
    assert data["reasons"] == list(decision.reasons)
    assert set(data) == {
        "action",
        "tier",
        "composite",
        "dimensions",
        "weakest",
        "reasons",
        "remediation",
        "policy_version",
        "gate",
        "identity_verified",
        "payment_hold",
    }


def test_decide_uses_the_policy_version() -> None:
    policy = DEFAULT_POLICY.model_copy(update={"version": 42})
    assert decide(decoded(DATA), context(), policy, NOW).policy_version == 42


# --- decide() on arbitrary state ----------------------------------------------------------

instants = st.integers(min_value=NOW - 400 * DAY_MS, max_value=NOW + 400 * DAY_MS)
counts = st.builds(DecayedCount, st.floats(0.0, 1e6), instants)
kinds = st.frozensets(st.sampled_from(["data", "request", "response", "payment", "report"]))
currencies = st.sampled_from(["USD", "EUR", "JPY", "KWD"])

peer_states = st.builds(
    PeerState,
    did=st.just(SENDER.did),
    revoked=st.booleans(),
    possession_verified_ms=st.none() | instants,
    possession_expires_ms=st.none() | instants,
    credential=st.none()
    | st.builds(
        credential,
        issuer=st.sampled_from([ISSUER, UNTRUSTED_ISSUER]),
        subject=st.sampled_from([SENDER.did, OTHER.did]),
        issued_at_ms=instants,
        expires_at_ms=instants,
    ),
    attestation=st.none() | st.builds(attestation, issued_at_ms=instants, expires_at_ms=instants),
    expected_codebase_hash=st.none() | st.sampled_from(["sha256:" + "a" * 64, "other"]),
    successes=counts,
    failures=counts,
    clean_streak=st.integers(min_value=0, max_value=10**6),
    last_anomaly_ms=st.none() | instants,
    bond=st.none()
    | st.builds(
        bond,
        st.integers(min_value=0, max_value=10**15),
        currencies,
        issuer=st.sampled_from([CUSTODIAN, ISSUER, UNTRUSTED_ISSUER]),
        expires_at_ms=instants,
        slashed_minor=st.integers(min_value=0, max_value=10**15),
    ),
    manifest=st.none() | st.builds(manifest, expires_at_ms=instants, kinds=kinds),
    spent_24h_ref=st.integers(min_value=0, max_value=10**15),
)

recipients = st.none() | st.builds(
    recipient,
    retention=st.sampled_from(["ephemeral", "temporary", "permanent"]),
    accepted_kinds=st.none() | kinds,
    accepted_data_classes=st.none() | st.frozensets(st.sampled_from(["pii", "health"])),
    requires_pact=st.booleans(),
)

ENVELOPES = [
    decoded(DATA),
    decoded(sign_envelope(kind="payment")),
    decoded(payment_envelope("0.01")),
    decoded(payment_envelope("75.00")),
    decoded(payment_envelope("9999.99", "EUR")),
    decoded(payment_envelope("99999999", "JPY")),
    decoded(payment_envelope("5.125", "KWD")),
    decoded(sign_envelope(kind="request", payment=PaymentIntent(currency="USD", amount_minor=1))),
    decoded(sign_envelope(data_classes=("pii", "health"), expires_at=NOW + MINUTE_MS)),
    decoded(sign_envelope(kind="report", recipient=RECIPIENT.did, data_classes=("payment_card",))),
]


pacts = st.none() | st.builds(pact, expires_at_ms=instants, max_payment_minor=st.integers(0, 10**9))
EXAMPLES = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@EXAMPLES
@given(
    st.sampled_from(ENVELOPES),
    peer_states,
    recipients,
    pacts,
    st.frozensets(st.sampled_from(["cred-1", "att-1"])),
    st.booleans(),
    st.none() | st.booleans(),
    st.integers(min_value=NOW - 6 * MINUTE_MS, max_value=NOW + 6 * MINUTE_MS),
)
def test_decide_never_raises_on_arbitrary_state(
    envelope: DecodedEnvelope,
    peer_state: PeerState,
    recipient_profile: Any,
    pact_terms: Any,
    revoked_evidence: frozenset[str],
    replayed: bool,
    signature_ok: bool | None,
    now: int,
) -> None:
    ctx = TrustContext(
        peer=peer_state,
        recipient=recipient_profile,
        issuers=TRUST_LIST,
        revoked_evidence=revoked_evidence,
        pact=pact_terms,
        replayed=replayed,
    )
    decision = decide(envelope, ctx, DEFAULT_POLICY, now, signature_ok=signature_ok)
    event(decision.gate or "scored")
    if decision.composite is None:
        assert decision.gate is not None
        assert (decision.action, decision.tier) == (Action.BLOCK, Tier.BLOCKED)
    else:
        assert 0.0 <= decision.composite <= 1.0
    orjson.dumps(decision.to_dict())


@EXAMPLES
@given(
    st.sampled_from(ENVELOPES),
    peer_states,
    pacts,
    st.integers(min_value=NOW - 30 * SECOND_MS, max_value=NOW + 30 * SECOND_MS),
)
def test_decide_scores_arbitrary_state_that_passes_the_gates(
    envelope: DecodedEnvelope, peer_state: PeerState, pact_terms: Any, now: int
) -> None:
    ctx = context(replace(peer_state, revoked=False), pact=pact_terms)
    decision = decide(envelope, ctx, DEFAULT_POLICY, now, signature_ok=True)
    assert decision.gate is None
    assert decision.composite is not None
    assert 0.0 <= decision.composite <= 1.0
    assert set(decision.dimensions) == set(DIMENSIONS)
    assert all(0.0 <= score <= 1.0 for score in decision.dimensions.values())
    verified = "identity_verified" in decision.reasons or "identity_attested" in decision.reasons
    assert decision.identity_verified == verified
    assert (decision.tier is Tier.BLOCKED) == (decision.composite < 0.5 or not verified)
    assert decision.weakest in DIMENSIONS
    orjson.dumps(decision.to_dict())
