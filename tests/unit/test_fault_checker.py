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


def test_a_lost_id_the_routers_listed_in_doubt_is_lost_but_not_silent() -> None:
    attempts = {f"m{i}": CONFIRMED for i in range(1_000)}
    delivered = Counter({f"m{i}": 1 for i in range(1_000) if i % 100})  # 10 lost
    listed = frozenset(f"m{i}" for i in range(0, 1_000, 200)) | {"m1", "m2"}  # 5 of the lost
    verdict = check(attempts, Outcomes(delivered, in_doubt=listed))
    row = verdict.row()
    assert not verdict.ok, "a listed loss is still a loss"
    assert (row["lost"], row["in_doubt"], row["lost_unlisted"]) == (10, 7, 5)
    assert verdict.lost_unlisted == sorted(f"m{i}" for i in range(100, 1_000, 200))
