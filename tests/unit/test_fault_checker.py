"""The fault suite's total-queue checker, on tables of what producers logged and where
messages ended."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.faults.checker import CONFIRMED, FAILED, UNKNOWN, Outcomes, check

CASES = [
    pytest.param({"a": CONFIRMED}, Outcomes(Counter({"a": 1})), (0, 0, 0, 0), id="clean"),
    pytest.param({"a": CONFIRMED}, Outcomes(), (1, 0, 0, 0), id="confirmed-lost"),
    pytest.param({"a": UNKNOWN}, Outcomes(), (0, 0, 0, 0), id="unknown-absent-is-fine"),
    pytest.param({"a": UNKNOWN}, Outcomes(Counter({"a": 1})), (0, 0, 0, 0), id="unknown-ok"),
    pytest.param({"a": FAILED}, Outcomes(), (0, 0, 0, 0), id="failed-absent"),
    pytest.param({"a": CONFIRMED}, Outcomes(Counter({"a": 2})), (0, 1, 0, 0), id="twice"),
    pytest.param(
        {"a": CONFIRMED},
        Outcomes(Counter({"a": 1}), [("a", "replay")]),
        (0, 1, 0, 1),
        id="delivered-and-blocked",
    ),
    pytest.param({}, Outcomes(Counter({"x": 1})), (0, 0, 1, 0), id="unexpected"),
    pytest.param(
        {"a": CONFIRMED},
        Outcomes(blocked=[("a", "clock_skew")]),
        (0, 0, 0, 1),
        id="fault-blocked",
    ),
    pytest.param(
        {"a": CONFIRMED}, Outcomes(escalated=["a"]), (0, 0, 0, 1), id="escalated-is-a-fault"
    ),
]


@pytest.mark.parametrize(("attempts", "outcomes", "expected"), CASES)
def test_checker_counts(
    attempts: dict[str, str], outcomes: Outcomes, expected: tuple[int, int, int, int]
) -> None:
    verdict = check(attempts, outcomes)
    row = verdict.row()
    assert (row["lost"], row["duplicated"], row["unexpected"], row["fault_blocked"]) == expected
    assert verdict.ok is (expected == (0, 0, 0, 0))


def test_a_large_clean_run_is_ok_and_counted() -> None:
    attempts = {f"m{i}": CONFIRMED for i in range(5_000)} | {"u": UNKNOWN}
    delivered = Counter({f"m{i}": 1 for i in range(5_000)})
    verdict = check(attempts, Outcomes(delivered))
    assert verdict.ok
    assert (verdict.attempts, verdict.confirmed, verdict.unknown, verdict.delivered) == (
        5_001,
        5_000,
        1,
        5_000,
    )
