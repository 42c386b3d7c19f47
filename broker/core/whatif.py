"""What-if: replay recorded decisions under a proposed policy, before it is applied (pure).

Each decision log entry holds the five dimension scores and the routing inputs (payment
amount, currency, 24 h spend). The replay recomputes composite, tier and action with the
proposed weights, thresholds and caps. Messages a hard gate blocked stay blocked: gates
depend on the message, not on weights, thresholds or caps. Changing the scoring constants
themselves (identity levels, reputation curve) needs a live replay, because the logged
dimension scores were computed with the old ones; `changed_scoring` says when that is the case.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from broker.core.currency import is_currency
from broker.core.decision import Tier
from broker.core.policy import Policy
from broker.core.scoring.stake import reference_minor
from broker.core.scoring.tiers import capped_tier, composite, negative_record, route_inputs

_SCORING_SECTIONS = ("identity", "reputation", "behavior", "compliance", "stake", "vouching")
# Entries record whether the sender had a verified identity ("idv"): without one the
# tier is capped at blocked whatever the proposed weights and thresholds.


@dataclass
class WhatIf:
    """What the proposed policy would have changed."""

    replayed: int = 0
    unchanged: int = 0
    newly: Counter[str] = field(default_factory=Counter)  # action -> count
    by_sender: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sender, action)
    by_reason: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, action)
    changes: list[dict[str, Any]] = field(default_factory=list)
    changed_scoring: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "replayed": self.replayed,
            "unchanged": self.unchanged,
            "newly_blocked": self.newly["block"],
            "newly_delivered": self.newly["deliver"],
            "newly_escalated": self.newly["escalate"],
            "by_sender": _nest(self.by_sender),
            "by_reason": _nest(self.by_reason),
            "changes": self.changes,
            "changed_scoring": self.changed_scoring,
        }


def _nest(counter: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (key, action), count in sorted(counter.items()):
        nested.setdefault(key, {})[action] = count
    return nested


def replay(entries: list[dict[str, Any]], current: Policy, proposed: Policy) -> WhatIf:
    """Replay decision log entries under `proposed`; report each changed outcome."""
    result = WhatIf(
        changed_scoring=[
            name for name in _SCORING_SECTIONS
            if getattr(current, name) != getattr(proposed, name)
        ]
    )  # fmt: skip
    for entry in entries:
        result.replayed += 1
        action, reason, tier = outcome_under(entry, proposed)
        if action == entry["action"]:
            result.unchanged += 1
            continue
        result.newly[action] += 1
        result.by_sender[(entry.get("from") or "?", action)] += 1
        result.by_reason[(reason, action)] += 1
        result.changes.append(
            {"trace": entry["trace"], "id": entry.get("id"), "from": entry.get("from"),
             "was": entry["action"], "now": action, "reason": reason, "tier": tier,
             "composite": entry.get("c")}
        )  # fmt: skip
    return result


def outcome_under(entry: dict[str, Any], policy: Policy) -> tuple[str, str, str]:
    """(action, reason, tier) the entry's message would get under `policy`."""
    if entry.get("gate") or not entry.get("dims"):
        reasons = entry.get("reasons") or ["blocked"]
        return entry["action"], reasons[0], Tier.BLOCKED.value
    total = composite(entry["dims"], policy)
    tier, capped = capped_tier(total, policy, identity_verified=entry.get("idv") is True)
    amount, currency = entry.get("amount"), entry.get("cur") or ""
    amount_ref = None
    if isinstance(amount, int) and is_currency(currency):
        # The proposed policy's rates: a rate change is what-if'd like any other change.
        amount_ref = reference_minor(amount, currency, policy.currency, round_up=True)
    action, reason = route_inputs(
        tier,
        is_payment=bool(entry.get("pay")),
        has_amount=amount is not None,
        amount_ref_minor=amount_ref,
        spent_ref_minor=int(entry.get("spent") or 0),
        payment_hold=entry.get("hold") is True,
        negative_record=negative_record(float(entry["dims"].get("reputation", 1.0)), policy),
        policy=policy,
    )
    # Plain text, not the enum: it becomes a JSON object key (by_reason), which orjson
    # accepts only as an exact str.
    return action.value, str(capped or reason), tier.value
