"""The issue's lifecycle table, scored by the DEFAULT policy: how a sender earns trust."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.core.decision import Action, Tier
from broker.core.envelope import Envelope
from broker.core.scoring import decide
from broker.core.state import PeerState

from .factories import (
    DEFAULT_POLICY,
    NOW,
    anomalous_peer,
    context,
    decoded,
    established_peer,
    identity_verified_peer,
    new_peer,
    payment_envelope,
    sign_envelope,
    trusted_peer,
)

TOLERANCE = 0.03


def _data() -> Envelope:
    return sign_envelope()


def _pay(amount: str) -> Callable[[], Envelope]:
    return lambda: payment_envelope(amount)


# stage, message, expected composite (+/- 0.03), tier, action, first reason
LIFECYCLE = [
    pytest.param(
        new_peer, _data, 0.30, Tier.BLOCKED, Action.BLOCK, "insufficient_trust", id="new-peer-data"
    ),
    pytest.param(
        new_peer,
        _pay("50"),
        0.30,
        Tier.BLOCKED,
        Action.BLOCK,
        "insufficient_trust",
        id="new-peer-payment",
    ),
    pytest.param(
        identity_verified_peer,
        _data,
        0.50,
        Tier.PROBATION,
        Action.DELIVER,
        "probation",
        id="verified-data",
    ),
    pytest.param(
        identity_verified_peer,
        _pay("50"),
        0.50,
        Tier.PROBATION,
        Action.BLOCK,
        "payment_trust_threshold",
        id="verified-payment",
    ),
    pytest.param(
        established_peer,
        _data,
        0.65,
        Tier.ESTABLISHED,
        Action.DELIVER,
        "trust_sufficient",
        id="10-successes-data",
    ),
    pytest.param(
        established_peer,
        _pay("50"),
        0.65,
        Tier.ESTABLISHED,
        Action.DELIVER,
        "payment_within_caps",
        id="10-successes-pay-50",
    ),
    pytest.param(
        established_peer,
        _pay("5000"),
        0.65,
        Tier.ESTABLISHED,
        Action.ESCALATE,
        "payment_cap_exceeded",
        id="10-successes-pay-5000",
    ),
    pytest.param(
        trusted_peer,
        _data,
        0.82,
        Tier.TRUSTED,
        Action.DELIVER,
        "trust_sufficient",
        id="60-successes-bond-data",
    ),
    pytest.param(
        trusted_peer,
        _pay("5000"),
        0.82,
        Tier.TRUSTED,
        Action.DELIVER,
        "payment_within_caps",
        id="60-successes-bond-pay-5000",
    ),
    pytest.param(
        trusted_peer,
        _pay("10000"),
        0.82,
        Tier.TRUSTED,
        Action.DELIVER,
        "payment_within_caps",
        id="60-successes-bond-pay-10000",
    ),
    pytest.param(
        trusted_peer,
        _pay("10000.01"),
        0.82,
        Tier.TRUSTED,
        Action.ESCALATE,
        "payment_cap_exceeded",
        id="60-successes-bond-pay-over-10000",
    ),
    pytest.param(
        anomalous_peer,
        _data,
        0.45,
        Tier.BLOCKED,
        Action.BLOCK,
        "insufficient_trust",
        id="after-anomaly-data",
    ),
    pytest.param(
        anomalous_peer,
        _pay("50"),
        0.45,
        Tier.BLOCKED,
        Action.BLOCK,
        "insufficient_trust",
        id="after-anomaly-payment",
    ),
]


@pytest.mark.parametrize(("stage", "message", "expected", "tier", "action", "reason"), LIFECYCLE)
def test_lifecycle(
    stage: Callable[[], PeerState],
    message: Callable[[], Envelope],
    expected: float,
    tier: Tier,
    action: Action,
    reason: str,
) -> None:
    decision = decide(decoded(message()), context(stage()), DEFAULT_POLICY, NOW)
    assert decision.composite == pytest.approx(expected, abs=TOLERANCE)
    assert decision.tier is tier
    assert decision.action is action
    assert decision.reasons[0] == reason


def test_anomaly_puts_the_sender_under_observation() -> None:
    decision = decide(decoded(sign_envelope()), context(anomalous_peer()), DEFAULT_POLICY, NOW)
    assert "under_observation" in decision.reasons
    # The proof of key possession predates the anomaly, so it no longer counts either.
    assert "possession_required" in decision.reasons
    assert decision.dimensions["behavioral"] == 0.0


def test_each_stage_earns_more_trust_until_the_anomaly() -> None:
    stages = [new_peer, identity_verified_peer, established_peer, trusted_peer, anomalous_peer]
    envelope = decoded(sign_envelope())
    decided = [decide(envelope, context(stage()), DEFAULT_POLICY, NOW) for stage in stages]
    composites = [d.composite for d in decided if d.composite is not None]
    assert len(composites) == len(stages)  # no gate stopped any of them before scoring
    assert composites[:4] == sorted(composites[:4])
    assert len(set(composites[:4])) == 4
    assert composites[4] < composites[2]


def test_stake_must_cover_the_payment_at_risk() -> None:
    # The stake dimension divides the bond by max(1,000, amount). A bond of exactly 1,000
    # USD keeps a sender trusted for ordinary messages but not for a 10,000 USD payment:
    # the stake then covers a tenth of the exposure, and the sender drops to established.
    peer_state = trusted_peer(bond_usd=1_000)
    plain = decide(decoded(sign_envelope()), context(peer_state), DEFAULT_POLICY, NOW)
    large = decide(decoded(payment_envelope("10000")), context(peer_state), DEFAULT_POLICY, NOW)
    assert plain.tier is Tier.TRUSTED
    assert large.dimensions["stake"] == pytest.approx(0.1)
    assert large.tier is Tier.ESTABLISHED
    assert (large.action, large.reasons[0]) == (Action.ESCALATE, "payment_cap_exceeded")
