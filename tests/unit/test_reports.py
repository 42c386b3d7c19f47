"""Outcome reports (broker/core/reports.py): what a report body may say and what it is worth."""

from __future__ import annotations

from typing import Any

import pytest

from broker.core.envelope import Envelope, PaymentIntent
from broker.core.policy import Policy, ReportModel, load_policy
from broker.core.reports import Report, domain_of, failure_units, parse_report, reporter_weight
from broker.errors import EnvelopeError
from tests.unit.factories import payment_envelope, sign_envelope

ID8 = "m" * 8


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"message_id": ID8, "outcome": "success"}, Report(ID8, "success", None)),
        ({"message_id": "m" * 128, "outcome": "failure"}, Report("m" * 128, "failure", None)),
        ({"message_id": ID8, "outcome": "success", "severity": None}, Report(ID8, "success", None)),
        (
            {"message_id": ID8, "outcome": "policy_violation", "severity": "critical"},
            Report(ID8, "policy_violation", "critical"),
        ),
        (
            {"message_id": ID8, "outcome": "hallucination", "severity": "low"},
            Report(ID8, "hallucination", "low"),
        ),
    ],
    ids=["success", "longest-id", "explicit-null-severity", "violation", "hallucination"],
)
def test_a_well_formed_report_is_parsed(body: dict[str, Any], expected: Report) -> None:
    assert parse_report(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        None,
        "success",
        [ID8, "success"],
        {"message_id": ID8, "outcome": "success", "extra": 1},
        {"outcome": "success"},
        {"message_id": 12345678, "outcome": "success"},
        {"message_id": "m" * 7, "outcome": "success"},
        {"message_id": "m" * 129, "outcome": "success"},
        {"message_id": ID8},
        {"message_id": ID8, "outcome": "great"},
        {"message_id": ID8, "outcome": "SUCCESS"},
        {"message_id": ID8, "outcome": "policy_violation"},
        {"message_id": ID8, "outcome": "hallucination", "severity": "extreme"},
        {"message_id": ID8, "outcome": "failure", "severity": "low"},
        {"message_id": ID8, "outcome": "success", "severity": "high"},
    ],
    ids=[
        "null", "string", "list", "unknown-member", "no-id", "id-not-text", "id-too-short",
        "id-too-long", "no-outcome", "unknown-outcome", "outcome-case", "violation-no-severity",
        "unknown-severity", "failure-with-severity", "success-with-severity",
    ],
)  # fmt: skip
def test_a_malformed_report_is_refused_as_report_malformed(body: Any) -> None:
    with pytest.raises(EnvelopeError) as refused:
        parse_report(body)
    assert refused.value.code == "report_malformed"


@pytest.mark.parametrize(
    ("outcome", "success"),
    [("success", True), ("failure", False), ("policy_violation", False), ("hallucination", False)],
)
def test_only_a_success_report_is_a_success(outcome: str, success: bool) -> None:
    assert Report(ID8, outcome, None).success is success


def _data_with_payment() -> Envelope:
    return sign_envelope(payment=PaymentIntent(currency="USD", amount="1.00"))


@pytest.mark.parametrize(
    ("envelope", "domain"),
    [
        (sign_envelope(), "data"),
        (sign_envelope(kind="request"), "request"),
        (payment_envelope("5.00"), "payment"),
        (_data_with_payment(), "payment"),  # an intent on any kind counts as a payment
    ],
    ids=["data", "request", "payment-kind", "data-with-intent"],
)
def test_an_outcome_counts_in_the_messages_domain(envelope: Envelope, domain: str) -> None:
    assert domain_of(envelope) == domain


# Default floor 0.50 and full trust 0.80: weight = (composite - 0.5) / 0.3, within [0, 1].
@pytest.mark.parametrize(
    ("composite", "weight"),
    [(0.0, 0.0), (0.49, 0.0), (0.50, 0.0), (0.56, 0.2), (0.65, 0.5), (0.80, 1.0), (0.95, 1.0)],
)
def test_a_reporters_word_weighs_from_the_floor_to_full_trust(
    composite: float, weight: float
) -> None:
    assert reporter_weight(composite, Policy()) == pytest.approx(weight)


def test_the_reporter_weight_follows_the_policys_floor_and_full_trust() -> None:
    policy = load_policy({"reports": {"reporter_floor": 0.2, "reporter_full": 0.6}})
    assert reporter_weight(0.3, policy) == pytest.approx(0.25)
    assert reporter_weight(0.6, policy) == pytest.approx(1.0)
    assert reporter_weight(0.19, policy) == 0.0


@pytest.mark.parametrize(
    ("outcome", "severity", "units"),
    [
        ("success", None, 0.0),
        ("failure", None, 1.0),
        ("policy_violation", "low", 1.0),
        ("policy_violation", "medium", 2.0),
        ("hallucination", "high", 4.0),
        ("hallucination", "critical", 8.0),
    ],
)
def test_failure_units_by_outcome_and_severity(
    outcome: str, severity: str | None, units: float
) -> None:
    assert failure_units(Report(ID8, outcome, severity), Policy()) == units


def test_failure_units_come_from_the_policys_severity_table() -> None:
    units = {"low": 0.5, "medium": 1.5, "high": 3.0, "critical": 16.0}
    policy = Policy(reports=ReportModel(severity_units=units))
    assert failure_units(Report(ID8, "hallucination", "critical"), policy) == 16.0
    assert failure_units(Report(ID8, "failure", None), policy) == 1.0  # no severity: one unit
