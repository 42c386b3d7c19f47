"""What a counted report does (broker/core/report_effects.py), as tables."""

from __future__ import annotations

import pytest

from broker.core.policy import Policy, load_policy
from broker.core.report_effects import (
    AddFailure,
    CountReport,
    HoldPayments,
    MarkAnomaly,
    SlashBond,
    count_report,
    serious_penalties,
    verified_in_full,
    voucher_liability,
)
from broker.core.reports import Report
from broker.core.state import Vouch

NOW = 1_800_000_000_000
POLICY = Policy()
UNITS = POLICY.reports.severity_units
SUCCESS_HALF = POLICY.reputation.success_half_life_ms
FAILURE_HALF = POLICY.reputation.failure_half_life_ms
PRAISE_CAP, BLAME_CAP = POLICY.reports.pair_success_cap, POLICY.reports.pair_failure_cap


def report(outcome: str = "success", severity: str | None = None) -> Report:
    return Report("m" * 16, outcome, severity)


@pytest.mark.parametrize(
    ("given", "weight", "orgs", "domain", "expected"),
    [
        pytest.param(report(), 0.8, ("a", "b"), "data",
                     CountReport(True, 0.8, SUCCESS_HALF, PRAISE_CAP), id="praise"),
        pytest.param(report(), 0.8, ("a", "a"), "data", None, id="own-organisation-praise"),
        pytest.param(report(), 0.0, ("a", "b"), "data", None, id="weightless-reporter"),
        pytest.param(report("failure"), 0.5, ("a", "b"), "payment",
                     CountReport(False, 0.5, FAILURE_HALF, BLAME_CAP, "payment"),
                     id="failure-counts-in-its-domain"),
        pytest.param(report("failure"), 0.5, ("a", "a"), "data",
                     CountReport(False, 0.5, FAILURE_HALF, BLAME_CAP, "data"),
                     id="own-organisation-blame-still-counts"),
        pytest.param(report("failure"), 1.0, ("a", "b"), "",
                     CountReport(False, 1.0, FAILURE_HALF, BLAME_CAP, None),
                     id="unknown-domain-counts-only-overall"),
        pytest.param(report("policy_violation", "medium"), 0.5, ("a", "b"), "data",
                     CountReport(False, UNITS["medium"] * 0.5, FAILURE_HALF, BLAME_CAP, "data"),
                     id="severity-sets-the-units"),
        pytest.param(report("hallucination", "critical"), 1.0, ("a", None), "request",
                     CountReport(False, UNITS["critical"], FAILURE_HALF, BLAME_CAP, "request",
                                 serious=True), id="critical-asks-for-corroboration"),
        pytest.param(report("policy_violation", "high"), 1.0, ("a", "b"), "data",
                     CountReport(False, UNITS["high"], FAILURE_HALF, BLAME_CAP, "data",
                                 serious=True), id="high-asks-for-corroboration"),
    ],
)  # fmt: skip
def test_what_a_counted_report_adds(
    given: Report,
    weight: float,
    orgs: tuple[str, str | None],
    domain: str,
    expected: CountReport | None,
) -> None:
    got = count_report(
        given, weight, POLICY, reporter_org=orgs[0], subject_org=orgs[1], domain=domain
    )
    assert got == expected


@pytest.mark.parametrize(
    ("vouches", "rules", "expected"),
    [
        pytest.param([Vouch("v1", 0.5, NOW + 1)], {}, {"v1": 0.5 * POLICY.vouching.liability},
                     id="share-times-liability"),
        pytest.param([Vouch("v1", 0.5, NOW)], {}, {}, id="expired-pays-nothing"),
        pytest.param([Vouch("v1", 1.0, NOW + 1)], {"max_share": 0.25, "liability": 2.0},
                     {"v1": 0.5}, id="share-capped-at-max-share"),
        pytest.param([Vouch("v1", 0.5, NOW + 1), Vouch("v2", 0.2, NOW + 1)],
                     {"max_share": 1.0, "liability": 1.0}, {"v1": 0.5, "v2": 0.2},
                     id="each-voucher-its-own-share"),
        pytest.param([Vouch("v1", 0.5, NOW + 1)], {"liability": 0.0}, {},
                     id="no-liability-no-bill"),
    ],
)  # fmt: skip
def test_vouchers_answer_for_a_share_of_the_damage(
    vouches: list[Vouch], rules: dict[str, float], expected: dict[str, float]
) -> None:
    policy = load_policy({"vouching": rules}) if rules else POLICY
    assert voucher_liability(vouches, policy, NOW) == pytest.approx(expected)


SLASH = POLICY.stake.critical_report_slash


@pytest.mark.parametrize(
    ("severities", "observe", "expected"),
    [
        pytest.param(["high"], True, [MarkAnomaly("why")], id="high-observed"),
        pytest.param(["high", "critical"], True, [MarkAnomaly("why"), SlashBond(SLASH)],
                     id="any-critical-slashes"),
        pytest.param(["critical"], False, [SlashBond(SLASH)],
                     id="confirmed-without-observation-still-slashes"),
        pytest.param(["high"], False, [], id="confirmed-high-without-observation"),
    ],
)  # fmt: skip
def test_corroborated_or_confirmed_misbehaviour_is_penalised(
    severities: list[str], observe: bool, expected: list[object]
) -> None:
    assert serious_penalties(severities, POLICY, why="why", observe=observe) == expected


def test_no_slash_when_the_policy_slashes_nothing() -> None:
    policy = load_policy({"stake": {"critical_report_slash": 0.0}})
    assert serious_penalties(["critical"], policy, why="w") == [MarkAnomaly("w")]


def test_verified_reports_count_in_full_beyond_the_cap() -> None:
    hold = NOW + POLICY.reports.verified_payment_hold_ms
    items = [
        {"severity": "critical", "weight": 1.0, "units": 1.5, "domain": "payment"},
        {"severity": "high", "weight": 0.5, "units": UNITS["high"] * 0.5, "domain": "data"},
        {"severity": "high", "weight": 1.0, "units": 0.0},
    ]
    assert verified_in_full(items, POLICY, NOW) == [
        HoldPayments(hold),
        AddFailure(UNITS["critical"] - 1.5, "payment"),
        # The second was counted in full already: nothing more.
        AddFailure(UNITS["high"], ""),
    ]


def test_no_payment_no_hold() -> None:
    items = [{"severity": "high", "weight": 1.0, "units": 0.0, "domain": "data"}]
    assert verified_in_full(items, POLICY, NOW) == [AddFailure(UNITS["high"], "data")]
