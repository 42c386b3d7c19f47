"""What a counted outcome report does to reputations, decided in pure code.

The router has checked that the reporter received the reported message, once, within
the window (store: claim_report). What follows is decided here and applied by the store
in one atomic step per group (lua/count_report.lua, lua/corroborate.lua, and the
subject's own fields):

1. `count_report`: the report's weight (failure units for a negative one) goes to the
   subject's decayed success or failure counts, and a failure also to its failures in
   the reported message's domain. One counterparty organisation can add at most its
   cap (the store applies the cap, which depends on what that organisation added
   before); an organisation's praise of its own agents counts for nothing.
2. `voucher_liability`: every unexpired voucher of the subject takes a share of the
   failure units actually added, as failures of its own: vouching is not free.
3. A high or critical report acts beyond its capped units only when independent
   organisations corroborate it (`corroborated`, `again`) or a reviewer confirms it;
   otherwise it waits for a reviewer (`pending`). `serious_penalties` and
   `verified_in_full` say what corroboration or confirmation does: observation (an
   anomaly), a slash of a critical report's bond, the rest of the units the cap held
   back, and a hold on payments when a payment was reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.core.envelope import MESSAGE_KINDS
from broker.core.policy import Policy
from broker.core.reports import Report, failure_units
from broker.core.state import Vouch

SERIOUS = ("high", "critical")


@dataclass(frozen=True, slots=True)
class CountReport:
    """Add `amount` to the subject's success (praise) or failure counts, and a failure
    also in `domain`, at most `cap` per reporting organisation; vouchers billed."""

    praise: bool
    amount: float
    half_life_ms: int
    cap: float
    domain: str | None = None
    # A high or critical report: ask for corroboration once counted.
    serious: bool = False


def count_report(
    report: Report,
    weight: float,
    policy: Policy,
    *,
    reporter_org: str,
    subject_org: str | None,
    domain: str,
) -> CountReport | None:
    """What a counted report adds, before the per-organisation cap; None: nothing."""
    if weight <= 0:
        return None
    if report.success:
        if reporter_org == subject_org:
            return None  # an organisation's praise of its own agents
        return CountReport(
            praise=True, amount=weight, half_life_ms=policy.reputation.success_half_life_ms,
            cap=policy.reports.pair_success_cap,
        )  # fmt: skip
    return CountReport(
        praise=False,
        amount=failure_units(report, policy) * weight,
        half_life_ms=policy.reputation.failure_half_life_ms,
        cap=policy.reports.pair_failure_cap,
        # Failures also count against the peer in the domain they happened in.
        domain=domain if domain in MESSAGE_KINDS else None,
        serious=report.severity in SERIOUS,
    )


def voucher_liability(vouches: Iterable[Vouch], policy: Policy, now_ms: int) -> dict[str, float]:
    """Voucher -> failure units it takes per unit its vouchee takes (unexpired vouches;
    a share above `vouching.max_share` counts as that much)."""
    rules = policy.vouching
    rates: dict[str, float] = {}
    for vouch in vouches:
        rate = min(vouch.share, rules.max_share) * rules.liability
        if rate > 0 and vouch.expires_at_ms > now_ms:
            rates[vouch.voucher] = rates.get(vouch.voucher, 0.0) + rate
    return rates


@dataclass(frozen=True, slots=True)
class MarkAnomaly:
    """Put the subject under observation (behaviour 0, re-verification), saying why."""

    why: str


@dataclass(frozen=True, slots=True)
class SlashBond:
    """Take `fraction` of the subject's bond."""

    fraction: float


@dataclass(frozen=True, slots=True)
class HoldPayments:
    """Escalate the subject's payments instead of delivering them until `until_ms`."""

    until_ms: int


@dataclass(frozen=True, slots=True)
class AddFailure:
    """Verified failure units for the subject, beyond any cap, also in `domain`."""

    units: float
    domain: str


SeriousEffect = MarkAnomaly | SlashBond | HoldPayments | AddFailure


def serious_penalties(
    severities: Iterable[str | None], policy: Policy, *, why: str, observe: bool = True
) -> list[SeriousEffect]:
    """Corroborated or confirmed serious misbehaviour: observation (unless a reviewer
    confirmed without `observe`), and a slash of the bond when any report is critical."""
    effects: list[SeriousEffect] = [MarkAnomaly(why)] if observe else []
    fraction = policy.stake.critical_report_slash
    if fraction > 0 and any(severity == "critical" for severity in severities):
        effects.append(SlashBond(fraction))
    return effects


def verified_in_full(
    items: Sequence[Mapping[str, Any]], policy: Policy, now_ms: int
) -> list[SeriousEffect]:
    """Corroborated or confirmed reports are verified: each now counts with its full
    weight, beyond the per-counterparty cap that bounded it while it stood alone, and a
    verified payment fraud keeps the sender's payments with a human for
    `reports.verified_payment_hold_ms`. `items` are serious-report records (severity,
    weight, units already added, domain)."""
    effects: list[SeriousEffect] = []
    if any(item.get("domain") == "payment" for item in items):
        effects.append(HoldPayments(now_ms + policy.reports.verified_payment_hold_ms))
    units = policy.reports.severity_units
    for item in items:
        full = units[str(item["severity"])] * float(item["weight"])
        remainder = max(0.0, full - float(item["units"]))
        if remainder > 0:
            effects.append(AddFailure(remainder, str(item.get("domain") or "")))
    return effects
