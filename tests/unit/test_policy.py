"""The routing policy: defaults match the issue, bad policies are refused with the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from broker.core.policy import (
    DIMENSIONS,
    PaymentCaps,
    Policy,
    Thresholds,
    Weights,
    load_policy,
)
from broker.errors import PolicyError


def test_default_policy_matches_the_issue_table() -> None:
    policy = Policy()
    assert policy.weights.as_dict() == {
        "identity": 0.30,
        "reputation": 0.25,
        "compliance": 0.20,
        "behavioral": 0.15,
        "stake": 0.10,
    }
    assert (policy.thresholds.probation, policy.thresholds.established) == (0.50, 0.60)
    assert policy.thresholds.trusted == 0.80
    caps = policy.caps
    assert (caps.established_per_message, caps.established_per_day) == (100, 500)
    assert (caps.trusted_per_message, caps.trusted_per_day) == (10_000, 50_000)
    assert policy.gates.max_clock_skew_ms == 5 * 60 * 1000
    assert policy.reputation.failure_multiplier == 0.85


def test_weights_name_every_dimension_once() -> None:
    assert tuple(Weights().as_dict()) == DIMENSIONS


def _weights(**changes: float) -> dict[str, float]:
    return {**Weights().as_dict(), **changes}


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param(_weights(identity=-0.1, reputation=0.65), id="negative"),
        pytest.param(_weights(identity=0.30 + 1e-8), id="sum-over-by-1e-8"),
        pytest.param(_weights(identity=0.30 - 1e-8), id="sum-under-by-1e-8"),
        pytest.param(_weights(stake=0.0), id="sum-0.9"),
        pytest.param(dict.fromkeys(DIMENSIONS, 0.0), id="all-zero"),
        pytest.param(dict.fromkeys(DIMENSIONS, 1.0), id="all-one"),
    ],
)
def test_bad_weights_are_refused(weights: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Weights(**weights)
    with pytest.raises(PolicyError, match="weights"):
        load_policy({"weights": weights})


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param(_weights(identity=0.30 + 1e-12), id="sum-over-by-1e-12"),
        pytest.param(_weights(identity=0.30 - 1e-12), id="sum-under-by-1e-12"),
        pytest.param({**dict.fromkeys(DIMENSIONS, 0.0), "stake": 1.0}, id="all-on-one"),
        pytest.param(dict.fromkeys(DIMENSIONS, 0.2), id="equal"),
        pytest.param({**dict.fromkeys(DIMENSIONS, 0.1), "identity": 0.6}, id="uneven"),
    ],
)
def test_good_weights_are_accepted(weights: dict[str, float]) -> None:
    assert Weights(**weights).as_dict() == weights
    assert load_policy({"weights": weights}).weights.as_dict() == weights


@pytest.mark.parametrize(
    "thresholds",
    [
        pytest.param({"probation": 0.6, "established": 0.6, "trusted": 0.8}, id="equal-low"),
        pytest.param({"probation": 0.5, "established": 0.8, "trusted": 0.8}, id="equal-high"),
        pytest.param({"probation": 0.7, "established": 0.6, "trusted": 0.8}, id="swapped"),
        pytest.param({"probation": 0.5, "established": 0.9, "trusted": 0.8}, id="trusted-low"),
        pytest.param({"probation": -0.1, "established": 0.6, "trusted": 0.8}, id="negative"),
        pytest.param({"probation": 0.5, "established": 0.6, "trusted": 1.1}, id="above-one"),
    ],
)
def test_thresholds_out_of_order_are_refused(thresholds: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Thresholds(**thresholds)
    with pytest.raises(PolicyError, match="thresholds"):
        load_policy({"thresholds": thresholds})


def test_custom_thresholds_in_order_are_accepted() -> None:
    thresholds = Thresholds(probation=0.0, established=0.5, trusted=1.0)
    assert (thresholds.probation, thresholds.established, thresholds.trusted) == (0.0, 0.5, 1.0)


@pytest.mark.parametrize(
    ("caps", "field"),
    [
        pytest.param({"established_per_message": -1}, "established_per_message", id="negative"),
        pytest.param({"trusted_per_day": -5}, "trusted_per_day", id="negative-day"),
        pytest.param({"established_per_message": 501}, "established_per_day", id="msg-over-day"),
        pytest.param({"trusted_per_message": 50_001}, "trusted_per_day", id="trusted-msg-over-day"),
        pytest.param(
            {"established_per_message": 200, "trusted_per_message": 150},
            "higher cap than trusted",
            id="established-over-trusted",
        ),
    ],
)
def test_bad_caps_are_refused(caps: dict[str, int], field: str) -> None:
    with pytest.raises(ValidationError):
        PaymentCaps(**caps)
    with pytest.raises(PolicyError, match=field):
        load_policy({"caps": caps})


def test_caps_per_message_equal_to_per_day_are_accepted() -> None:
    caps = PaymentCaps(established_per_message=500, established_per_day=500)
    assert caps.established_per_message == caps.established_per_day


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        pytest.param({"weights": {"identity": -1}}, ["weights.identity"], id="weight"),
        pytest.param({"caps": {"trusted_per_day": "lots"}}, ["caps.trusted_per_day"], id="cap"),
        pytest.param({"gates": {"max_clock_skew_ms": 0}}, ["gates.max_clock_skew_ms"], id="gate"),
        pytest.param(
            {"gates": {"max_retention": {"pii": "forever"}}},
            ["gates.max_retention.pii"],
            id="retention",
        ),
        pytest.param({"surprise": 1}, ["surprise"], id="unknown-section"),
        pytest.param({"weights": {"trust": 0.1}}, ["weights.trust"], id="unknown-weight"),
        pytest.param(
            {"version": 0, "reputation": {"failure_multiplier": 1.5}},
            ["version", "reputation.failure_multiplier"],
            id="every-problem-listed",
        ),
    ],
)
def test_load_policy_names_every_bad_field(data: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(data)
    message = str(caught.value)
    assert message.startswith("policy refused: ")
    for field in fields:
        assert f"{field}:" in message


def test_load_policy_accepts_plain_json_numbers() -> None:
    # JSON has one number type: integral weights and caps arrive as ints, thresholds as floats.
    policy = load_policy(
        {
            "version": 7,
            "weights": {
                "identity": 1,
                "reputation": 0,
                "compliance": 0,
                "behavioral": 0,
                "stake": 0,
            },
            "caps": {"established_per_message": 50},
        }
    )
    assert policy.version == 7
    assert policy.weights.identity == 1.0
    assert policy.caps.established_per_message == 50
    assert policy.caps.trusted_per_message == 10_000


@pytest.mark.parametrize(
    ("section", "data"),
    [
        ("identity", {"unverified": 0.5, "possession": 0.4}),
        ("reputation", {"prior": 0.95, "ceiling": 0.9}),
        ("reputation", {"failure_multiplier": 0.0}),
        ("behavior", {"baseline_messages": 0}),
        ("stake", {"full_coverage": 0}),
    ],
    ids=["identity-falls", "prior-over-ceiling", "failure-zero", "baseline-zero", "coverage-zero"],
)
def test_scoring_constants_are_validated(section: str, data: dict[str, Any]) -> None:
    with pytest.raises(PolicyError, match=section):
        load_policy({section: data})


def test_policy_is_frozen() -> None:
    policy = Policy()
    with pytest.raises(ValidationError, match="frozen"):
        policy.version = 2


def test_default_policy_round_trips_through_json() -> None:
    policy = Policy(version=3)
    assert load_policy(policy.model_dump(mode="json")) == policy
