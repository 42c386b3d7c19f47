"""Decision: the outcome of scoring one message, with everything needed to explain it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict


class Action(StrEnum):
    """What the router does with the message."""

    DELIVER = "deliver"
    BLOCK = "block"
    ESCALATE = "escalate"


class Tier(StrEnum):
    """Trust tier of the sender for this message."""

    BLOCKED = "blocked"
    PROBATION = "probation"
    ESTABLISHED = "established"
    TRUSTED = "trusted"


class DecisionRecord(TypedDict, total=False):
    """A decision as a record carries it (broker/core/decision.py Decision.to_dict)."""

    action: str
    tier: str
    composite: float | None
    dimensions: dict[str, float]
    weakest: str | None
    reasons: list[str]
    remediation: str
    policy_version: int | None
    gate: str | None
    identity_verified: bool
    payment_hold: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """Action, tier, composite, per-dimension scores, reasons and a remediation hint.

    `composite` is None when a hard gate blocked the message before scoring. Reason
    codes are plain text (exact str, not a broker.reasons.Reason member): a record, a
    log line or a caller's dict key gets exactly the code, and orjson takes only an
    exact str as a JSON object key. Whoever builds a Decision passes str(reason).
    """

    action: Action
    tier: Tier
    composite: float | None
    dimensions: dict[str, float]
    weakest: str | None
    reasons: tuple[str, ...]
    remediation: str
    policy_version: int
    gate: str | None = None
    # Whether the sender had an issuer-verified identity: without one the tier is capped
    # at blocked (what-if replays need it to apply that rule).
    identity_verified: bool = False
    # Whether the sender's payments were on hold (a serious report about one of them
    # awaits corroboration or a reviewer): held payments are escalated.
    payment_hold: bool = False

    def to_dict(self) -> DecisionRecord:
        """Plain JSON-ready form, as recorded on the blocked stream and decision log."""
        return {
            "action": self.action.value,
            "tier": self.tier.value,
            "composite": self.composite,
            "dimensions": self.dimensions,
            "weakest": self.weakest,
            "reasons": list(self.reasons),
            "remediation": self.remediation,
            "policy_version": self.policy_version,
            "gate": self.gate,
            "identity_verified": self.identity_verified,
            "payment_hold": self.payment_hold,
        }
