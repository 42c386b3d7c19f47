"""Policy changes in pure code (broker/core/policydiff.py): set by path, diff, and the history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broker.core.policy import Policy, load_policy
from broker.core.policydiff import diff, history_with_default, set_value
from broker.errors import PolicyError

DEFAULT = Policy()


@pytest.mark.parametrize(
    ("path", "raw", "read", "expected"),
    [
        ("thresholds.trusted", "0.85", lambda p: p.thresholds.trusted, 0.85),
        ("caps.established_per_day", "600", lambda p: p.caps.established_per_day, 600),
        ("caps.trusted_per_day", "60000", lambda p: p.caps.trusted_per_day, 60_000),
        # A bare word is a string; a quoted one is the same string.
        ("gates.max_retention.pii", "ephemeral", lambda p: p.gates.max_retention["pii"],
         "ephemeral"),
        ("gates.max_retention.pii", '"permanent"', lambda p: p.gates.max_retention["pii"],
         "permanent"),
        # A JSON object replaces the whole field.
        ("currency.rates", '{"USD": "1", "EUR": "1.1"}', lambda p: p.currency.rates,
         {"USD": "1", "EUR": "1.1"}),
        ("version", "7", lambda p: p.version, 7),
    ],
)  # fmt: skip
def test_set_value_replaces_the_value_at_a_dotted_path(
    path: str, raw: str, read: Callable[[Policy], Any], expected: Any
) -> None:
    changed = set_value(DEFAULT, path, raw)
    assert read(changed) == expected


def test_set_value_changes_nothing_but_the_path() -> None:
    changed = set_value(DEFAULT, "thresholds.trusted", "0.85")
    assert diff(DEFAULT, changed) == [("thresholds.trusted", 0.8, 0.85)]


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        ("nosuch.field", "1", "no policy section 'nosuch'"),
        ("weights.nosuch", "1", "no policy field 'weights.nosuch'"),
        ("nosuch", "1", "no policy field 'nosuch'"),
        ("weights.identity.deep", "1", "no policy section 'identity'"),
        ("weights.identity", "-0.1", "weights.identity"),  # validated: ge=0
        ("weights.stake", "0.2", "weights must sum to 1"),  # one weight alone never can
        ("thresholds.probation", "0.7", "thresholds must rise strictly"),  # whole-policy rule
        ("currency.reference", "EUR", "reference currency's rate must be 1"),
    ],
)
def test_set_value_refuses_unknown_paths_and_invalid_policies(
    path: str, raw: str, message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        set_value(DEFAULT, path, raw)


@pytest.mark.parametrize(
    ("new", "changes"),
    [
        ({}, []),
        ({"version": 9}, []),  # the version is not a change of substance
        ({"thresholds": {"trusted": 0.85}}, [("thresholds.trusted", 0.8, 0.85)]),
        (
            {"weights": {"stake": 0.2, "identity": 0.2}, "caps": {"trusted_per_day": 60_000}},
            # sorted by path, section by section
            [("caps.trusted_per_day", 50_000, 60_000), ("weights.identity", 0.3, 0.2),
             ("weights.stake", 0.1, 0.2)],
        ),
        (
            {"currency": {"rates": {"USD": "1", "EUR": "1.1"}}},
            [("currency.rates.EUR", None, "1.1")],  # an added key: None before
        ),
        (
            {"gates": {"max_retention": {"pii": "temporary"}}},
            # removed keys: None after
            [(f"gates.max_retention.{name}", old, None) for name, old in sorted({
                "payment_card": "ephemeral", "credentials": "ephemeral",
                "biometric": "ephemeral", "health": "temporary", "national_id": "temporary",
                "financial_account": "temporary",
            }.items())],
        ),
    ],
    ids=["same", "version-only", "one-field", "several", "key-added", "keys-removed"],
)  # fmt: skip
def test_diff_lists_every_differing_leaf_with_old_and_new(
    new: dict[str, Any], changes: list[tuple[str, Any, Any]]
) -> None:
    assert diff(DEFAULT, load_policy(new)) == changes


def test_diff_runs_both_ways() -> None:
    proposed = load_policy({"thresholds": {"trusted": 0.85}})
    assert diff(proposed, DEFAULT) == [("thresholds.trusted", 0.85, 0.8)]


def _versions(*numbers: int) -> list[dict[str, Any]]:
    return [{"version": n, "who": "ops"} for n in numbers]


@pytest.mark.parametrize(
    ("history", "limit", "appended"),
    [
        ([], 10, True),  # never changed: the default alone
        (_versions(3, 2), 10, True),
        (_versions(3, 2), 3, True),  # one short of the limit: the default still fits
        (_versions(3, 2), 2, False),  # a full page: version 1 is on a later one
        (_versions(2, 1), 10, False),  # version 1 was recorded (a reset wrote it)
    ],
)
def test_the_history_ends_with_the_built_in_default_when_it_is_in_range(
    history: list[dict[str, Any]], limit: int, appended: bool
) -> None:
    listed = history_with_default(history, limit)
    assert listed[: len(history)] == history
    assert len(listed) == len(history) + appended


def test_the_built_in_default_entry() -> None:
    [default] = history_with_default([], 5)
    assert (default["version"], default["who"], default["at_ms"]) == (1, "(built in)", None)
    assert "default policy" in default["why"]
    assert "version" not in default["policy"]
    assert default["policy"]["thresholds"] == {
        "probation": 0.5, "established": 0.6, "trusted": 0.8
    }  # fmt: skip
    assert default["policy"]["weights"] == {
        "identity": 0.3, "reputation": 0.25, "compliance": 0.2, "behavioral": 0.15, "stake": 0.1
    }  # fmt: skip
