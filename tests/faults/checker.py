"""The total-queue checker: what producers logged against where every message ended.

Counted the way Jepsen's total-queue checker counts, for a broker whose every message
must end in exactly one place (an agent queue, trust.blocked or trust.escalations):
- lost: confirmed by RabbitMQ, and no outcome anywhere;
- duplicated: an id with more than one outcome (twice in a queue, or in two places);
- unexpected: an outcome for an id no producer attempted;
- fault-blocked: blocked (or escalated) although every message the suite sends is one the
  policy delivers: only a fault can have caused it (clock_skew, replay, internal_error...).
A publish whose confirm never came is `unknown`: it may or may not have arrived, so its
outcome counts neither as lost when absent nor as unexpected when present.
A lost id is also looked up in the routers' in-doubt list (outcomes whose commit got no
commit-ok: `trust-broker in-doubt`): `lost_unlisted` counts the silent losses.
Pure code: the suite and its unit tests feed it plain data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONFIRMED, UNKNOWN, FAILED = "confirmed", "unknown", "failed"


@dataclass(frozen=True)
class Outcomes:
    """Where message ids ended: delivered copies, blocked (id, reason), escalated ids."""

    delivered: Counter[str] = field(default_factory=Counter)
    blocked: list[tuple[str, str]] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    in_doubt: frozenset[str] = frozenset()  # ids the routers listed as in doubt


@dataclass(frozen=True)
class Verdict:
    """The checker's counts; `ok` when nothing was lost, duplicated, unexpected or
    blocked by a fault."""

    attempts: int
    confirmed: int
    unknown: int
    failed: int
    delivered: int
    blocked: dict[str, int]
    escalated: int
    lost: list[str]
    duplicated: dict[str, int]
    unexpected: list[str]
    fault_blocked: dict[str, int]
    in_doubt: int = 0
    lost_unlisted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Zero lost, duplicated, unexpected and fault-blocked."""
        return not (self.lost or self.duplicated or self.unexpected or self.fault_blocked)

    def row(self) -> dict[str, object]:
        """The counts as one flat record (for the table and --json)."""
        return {
            "attempts": self.attempts, "confirmed": self.confirmed, "unknown": self.unknown,
            "failed": self.failed, "delivered": self.delivered,
            "blocked": sum(self.blocked.values()), "blocked_by_reason": self.blocked,
            "escalated": self.escalated, "lost": len(self.lost),
            "duplicated": len(self.duplicated), "unexpected": len(self.unexpected),
            "fault_blocked": sum(self.fault_blocked.values()), "in_doubt": self.in_doubt,
            "lost_unlisted": len(self.lost_unlisted),
        }  # fmt: skip


def check(attempts: Mapping[str, str], outcomes: Outcomes) -> Verdict:
    """Judge one run: `attempts` maps every attempted id to confirmed/unknown/failed."""
    places: Counter[str] = Counter(outcomes.delivered)
    places.update(message_id for message_id, _ in outcomes.blocked)
    places.update(outcomes.escalated)
    status = Counter(attempts.values())
    reasons = Counter(reason for _, reason in outcomes.blocked)
    # Every message the suite sends is deliverable: any block or escalation is a fault's.
    fault_blocked = dict(reasons)
    if outcomes.escalated:
        fault_blocked["escalated"] = len(outcomes.escalated)
    lost = sorted(i for i, s in attempts.items() if s == CONFIRMED and not places[i])
    return Verdict(
        attempts=len(attempts),
        confirmed=status[CONFIRMED],
        unknown=status[UNKNOWN],
        failed=status[FAILED],
        delivered=sum(1 for n in outcomes.delivered.values() if n),
        blocked=dict(reasons),
        escalated=len(outcomes.escalated),
        lost=lost,
        duplicated={i: n for i, n in places.items() if n > 1},
        unexpected=sorted(i for i in places if i not in attempts),
        fault_blocked=fault_blocked,
        in_doubt=len(outcomes.in_doubt),
        lost_unlisted=[i for i in lost if i not in outcomes.in_doubt],
    )


def merge_delivered(batches: Iterable[Counter[str]]) -> Counter[str]:
    """One Counter of delivered ids across every recipient's queue."""
    total: Counter[str] = Counter()
    for batch in batches:
        total.update(batch)
    return total
