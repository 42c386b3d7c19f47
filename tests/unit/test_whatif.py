"""What-if replays (broker/core/whatif.py): each logged decision under a proposed policy.

Default policy: weights 0.30/0.25/0.20/0.15/0.10, tiers from 0.50/0.60/0.80, caps per
message / per day $100 / $500 when established and $10,000 / $50,000 when trusted,
reputation prior 0.25. Amounts in entries are minor units (cents).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from broker.core.policy import Policy, load_policy
from broker.core.whatif import outcome_under, replay

DEFAULT = Policy()


def dims(value: float, **overrides: float) -> dict[str, float]:
    """Every dimension at `value` (so the composite is `value`), some overridden."""
    scores = dict.fromkeys(("identity", "reputation", "compliance", "behavioral", "stake"), value)
    scores.update(overrides)
    return scores


def entry(**fields: Any) -> dict[str, Any]:
    """A logged data message from a verified sender that was delivered."""
    base: dict[str, Any] = {"trace": "t" * 32, "id": "msg-1", "from": "did:a", "action": "deliver",
                            "dims": dims(0.7), "idv": True, "reasons": [], "c": 0.7}  # fmt: skip
    base.update(fields)
    return base


def payment(amount: int | None, **fields: Any) -> dict[str, Any]:
    """A logged USD payment of `amount` cents."""
    fields.setdefault("cur", "USD" if amount is not None else "")
    return entry(pay=True, amount=amount, **fields)


@pytest.mark.parametrize(
    ("logged", "outcome"),
    [
        # Gates and undecodable messages stay as they were.
        (entry(gate="replay", action="block", reasons=["replay"], dims={}),
         ("block", "replay", "blocked")),
        (entry(action="block", reasons=[], dims={}), ("block", "blocked", "blocked")),
        (entry(action="block", reasons=None, dims=None), ("block", "blocked", "blocked")),
        # Tiers: each threshold belongs to the tier it starts.
        (entry(dims=dims(1.0)), ("deliver", "trust_sufficient", "trusted")),
        (entry(dims=dims(0.8)), ("deliver", "trust_sufficient", "trusted")),
        (entry(dims=dims(0.6)), ("deliver", "trust_sufficient", "established")),
        (entry(dims=dims(0.55)), ("deliver", "probation", "probation")),
        (entry(dims=dims(0.5)), ("deliver", "probation", "probation")),
        (entry(dims=dims(0.49)), ("block", "insufficient_trust", "blocked")),
        # Without an issuer-verified identity no score delivers.
        (entry(dims=dims(1.0), idv=False), ("block", "verified_identity_required", "blocked")),
        (entry(dims=dims(1.0), idv=None), ("block", "verified_identity_required", "blocked")),
        (entry(dims=dims(0.3), idv=False), ("block", "insufficient_trust", "blocked")),
        # Payments.
        (payment(5_000), ("deliver", "payment_within_caps", "established")),
        (payment(10_000), ("deliver", "payment_within_caps", "established")),  # cap is <=
        (payment(10_001), ("escalate", "payment_cap_exceeded", "established")),
        (payment(5_000, spent=45_000), ("deliver", "payment_within_caps", "established")),
        (payment(5_000, spent=45_001), ("escalate", "daily_cap_exceeded", "established")),
        (payment(500_000, dims=dims(0.9)), ("deliver", "payment_within_caps", "trusted")),
        (payment(1_000_001, dims=dims(0.9)), ("escalate", "payment_cap_exceeded", "trusted")),
        (payment(100, dims=dims(0.55)), ("block", "payment_trust_threshold", "probation")),
        (payment(None), ("escalate", "payment_amount_missing", "established")),
        (payment(100, cur="EUR"), ("escalate", "currency_unrated", "established")),
        (payment(100, cur=""), ("escalate", "currency_unrated", "established")),
        (payment(100, cur="XXX"), ("escalate", "currency_unrated", "established")),
        (payment(100, hold=True), ("escalate", "payment_hold", "established")),
        # Reputation below the 0.25 prior: 0.3 + 0.25 x 0.2 + 0.2 + 0.15 + 0.1 = 0.80.
        (payment(100, dims=dims(1.0, reputation=0.2)),
         ("escalate", "negative_record", "trusted")),
        (payment(100, dims=dims(1.0, reputation=0.25)),
         ("deliver", "payment_within_caps", "trusted")),
    ],
)  # fmt: skip
def test_outcome_under_the_default_policy(
    logged: dict[str, Any], outcome: tuple[str, str, str]
) -> None:
    assert outcome_under(logged, DEFAULT) == outcome


EUR = load_policy({"currency": {"rates": {"USD": "1", "EUR": "1.1"}}})


@pytest.mark.parametrize(
    ("cents", "outcome"),
    [
        (9_090, ("deliver", "payment_within_caps", "established")),  # EUR 90.90 = USD 99.99
        (9_091, ("escalate", "payment_cap_exceeded", "established")),  # = USD 100.001, up
    ],
)
def test_a_payment_is_judged_at_the_proposed_policys_rate(
    cents: int, outcome: tuple[str, str, str]
) -> None:
    logged = entry(pay=True, amount=cents, cur="EUR")
    assert outcome_under(logged, EUR) == outcome
    assert outcome_under(logged, DEFAULT)[1] == "currency_unrated"


def test_outcome_under_uses_the_proposed_weights_and_thresholds() -> None:
    logged = entry(dims=dims(0.5, identity=1.0))  # 0.3 + 0.7 x 0.5 = 0.65 by default
    assert outcome_under(logged, DEFAULT)[2] == "established"
    # 0.6 x 1 + (0.05 + 0.1 + 0.15 + 0.1) x 0.5 = 0.80
    heavier = load_policy({"weights": {"identity": 0.6, "reputation": 0.05, "compliance": 0.1}})
    assert outcome_under(logged, heavier) == ("deliver", "trust_sufficient", "trusted")
    stricter = load_policy({"thresholds": {"probation": 0.7, "established": 0.8, "trusted": 0.9}})
    assert outcome_under(logged, stricter) == ("block", "insufficient_trust", "blocked")


def test_replaying_under_the_same_policy_changes_nothing() -> None:
    entries = [entry(), payment(5_000), entry(gate="replay", action="block", dims={})]
    result = replay(entries, DEFAULT, DEFAULT)
    assert (result.replayed, result.unchanged, result.changes) == (3, 3, [])
    assert result.to_dict() == {
        "replayed": 3, "unchanged": 3, "newly_blocked": 0, "newly_delivered": 0,
        "newly_escalated": 0, "by_sender": {}, "by_reason": {}, "changes": [],
        "changed_scoring": [],
    }  # fmt: skip


def test_a_replay_reports_each_changed_outcome_by_sender_and_reason() -> None:
    stricter = load_policy({"thresholds": {"probation": 0.6, "established": 0.7, "trusted": 0.9}})
    entries = [
        entry(dims=dims(0.55), c=0.55, reasons=["probation"]),  # probation -> blocked
        entry(dims=dims(0.65), c=0.65, **{"from": "did:b"}),  # probation: still delivered
        payment(5_000, dims=dims(0.65), c=0.65, id="msg-2", **{"from": None}),  # -> blocked
        entry(dims=dims(0.95), c=0.95),  # still delivered
        entry(dims=dims(0.4), c=0.4, action="block"),  # still blocked
    ]
    result = replay(entries, DEFAULT, stricter)
    assert (result.replayed, result.unchanged) == (5, 3)
    summary = result.to_dict()
    assert (summary["newly_blocked"], summary["newly_delivered"]) == (2, 0)
    assert summary["by_sender"] == {"?": {"block": 1}, "did:a": {"block": 1}}
    assert summary["by_reason"] == {
        "insufficient_trust": {"block": 1}, "payment_trust_threshold": {"block": 1}
    }  # fmt: skip
    assert summary["changes"] == [
        {"trace": "t" * 32, "id": "msg-1", "from": "did:a", "was": "deliver", "now": "block",
         "reason": "insufficient_trust", "tier": "blocked", "composite": 0.55},
        {"trace": "t" * 32, "id": "msg-2", "from": None, "was": "deliver", "now": "block",
         "reason": "payment_trust_threshold", "tier": "probation", "composite": 0.65},
    ]  # fmt: skip
    assert summary["changed_scoring"] == []  # thresholds are replayable as logged
    # What the CLI and the console send: reason codes as JSON object keys.
    assert orjson.loads(orjson.dumps(summary)) == summary


def test_newly_delivered_and_escalated_are_counted_apart() -> None:
    looser = load_policy({"caps": {"established_per_message": 200, "established_per_day": 500}})
    entries = [
        payment(15_000, action="escalate"),  # $150: within the new $200 cap
        payment(25_000, action="escalate"),  # still above it
        payment(5_000, spent=49_000),  # delivered once, now over the lower daily cap
    ]
    summary = replay(entries, DEFAULT, looser).to_dict()
    assert (summary["newly_delivered"], summary["newly_escalated"]) == (1, 1)
    assert summary["by_reason"] == {
        "daily_cap_exceeded": {"escalate": 1}, "payment_within_caps": {"deliver": 1}
    }  # fmt: skip


@pytest.mark.parametrize(
    ("proposed", "changed"),
    [
        ({"weights": {"identity": 0.5, "reputation": 0.05}}, []),
        ({"caps": {"trusted_per_day": 60_000}}, []),
        ({"identity": {"verified": 0.8}}, ["identity"]),
        ({"vouching": {"max_boost": 0.1}, "reputation": {"prior": 0.2}},
         ["reputation", "vouching"]),  # in a fixed order, not the order given
        ({"behavior": {"prior": 0.4}, "compliance": {"pact": 0.9}, "stake": {"full_coverage": 5}},
         ["behavior", "compliance", "stake"]),
    ],
)  # fmt: skip
def test_changed_scoring_names_the_sections_a_log_replay_cannot_judge(
    proposed: dict[str, Any], changed: list[str]
) -> None:
    assert replay([], DEFAULT, load_policy(proposed)).changed_scoring == changed

