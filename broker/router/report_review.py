"""Serious reports: a high or critical report acts only when corroborated or confirmed.

One counterparty's word can lower a peer's reputation by at most `pair_failure_cap`
failure units, however serious the report. Observation (and, for a critical report, a
slash of `stake.critical_report_slash` of the bond) follows only when independent
organisations corroborate it within `reports.corroboration_window_ms`, or when a security
reviewer confirms the report. Until then it waits in a review queue
(`trust-broker reports list`, `reports confirm ID`, `reports dismiss ID`); if it is about a
payment, the peer's payments are escalated instead of delivered meanwhile (a hold): one
victim cannot block a peer, but it can stop its money moving unattended.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from broker.core.envelope import Envelope
from broker.core.policy import Policy
from broker.core.report_effects import (
    HoldPayments,
    MarkAnomaly,
    SeriousEffect,
    SlashBond,
    serious_penalties,
    verified_in_full,
)
from broker.core.reports import Report
from broker.errors import ReviewError
from broker.store.redis import RedisStore

log = logging.getLogger("broker.router.report_review")

CORROBORATED = "corroborated_report"
CONFIRMED = "confirmed_report"


async def act_on_serious_report(
    store: RedisStore,
    env: Envelope,
    report: Report,
    reporter_org: str,
    weight: float,
    added: float,
    serious: str,
    policy: Policy,
    now_ms: int,
    *,
    domain: str,
) -> None:
    """What a high or critical report does beyond its `added` capped failure units, by
    the corroboration state `serious` (router side)."""
    subject = env.recipient
    this = {"severity": report.severity, "weight": weight, "units": added, "domain": domain}
    if serious == "again":
        # Corroborated again within the window: observation again, no second slash.
        effects = [MarkAnomaly(CORROBORATED), *verified_in_full([this], policy, now_ms)]
        await apply_serious(store, subject, effects, policy, now_ms)
    elif serious == "corroborated":
        pending = await store.serious.list(subject=subject)
        severities = [report.severity, *(item["severity"] for item in pending)]
        effects = [
            *serious_penalties(severities, policy, why=CORROBORATED),
            *verified_in_full([this, *pending], policy, now_ms),
        ]
        await apply_serious(store, subject, effects, policy, now_ms)
        for item in pending:
            await store.serious.close({**item, "state": "corroborated", "closed_ms": now_ms})
        log.warning("serious reports about %s corroborated: under observation", subject)
    elif serious == "pending":
        item = {
            "id": uuid.uuid4().hex, "subject": subject, "reporter": env.sender,
            "reporter_org": reporter_org, "message_id": report.message_id,
            "report_id": env.id, "outcome": report.outcome, "severity": report.severity,
            "weight": round(weight, 4), "units": round(added, 4), "at_ms": now_ms,
            "state": "open", "domain": domain,
        }  # fmt: skip
        limit = policy.reports.max_open_reviews_per_reporter
        filed = await store.serious.open(item, limit)
        if filed == "full":
            log.info("serious report from %s not queued: %d already open", env.sender, limit)
            return
        if filed == "folded":
            log.info("serious report from %s folded into its open item about %s",
                     env.sender, subject)  # fmt: skip
        if domain == "payment":
            until = now_ms + policy.reports.corroboration_window_ms
            await apply_serious(store, subject, [HoldPayments(until)], policy, now_ms)


async def apply_serious(
    store: RedisStore, subject: str, effects: list[SeriousEffect], policy: Policy, now_ms: int
) -> None:
    """Apply what broker/core/report_effects.py decided about `subject`, in order."""
    for effect in effects:
        if isinstance(effect, MarkAnomaly):
            await store.record_anomaly(subject, now_ms, effect.why)
        elif isinstance(effect, SlashBond):
            await store.slash_bond(subject, fraction=effect.fraction)
        elif isinstance(effect, HoldPayments):
            await store.hold_payments(subject, effect.until_ms)
        else:
            await store.add_failure(subject, effect.units, domain=effect.domain,
                                    now_ms=now_ms, policy=policy)  # fmt: skip


def _check(item_id: str, reviewer: str, why: str) -> None:
    if len(item_id) != 32 or not all(c in "0123456789abcdef" for c in item_id):
        raise ReviewError(f"{item_id!r} is not a report review id (32 hex)", code="bad_request")
    if not reviewer.strip() or len(reviewer) > 64 or not reviewer.isprintable():
        raise ReviewError("a reviewer name (1-64 printable characters) is required",
                          code="no_reviewer")  # fmt: skip
    if not why.strip() or len(why) > 1000:
        raise ReviewError("say why (--why, 1-1000 characters): it is kept on record",
                          code="no_reason")  # fmt: skip


async def _close(
    store: RedisStore, item_id: str, state: str, reviewer: str, why: str, now_ms: int
) -> dict[str, Any]:
    """Close an open item once, with who decided, when and why."""
    _check(item_id, reviewer, why)
    item = await store.serious.get(item_id)
    if item is None:
        raise ReviewError(f"no serious report {item_id}", code="not_found")
    closed = {**item, "state": state, "reviewer": reviewer, "why": why, "closed_ms": now_ms}
    if not await store.serious.close(closed):
        raise ReviewError(
            f"already decided: {item.get('state')} by {item.get('reviewer', 'the router')}",
            code="already_decided",
        )
    await store.log_review(item_id, {"action": state, "reviewer": reviewer, "why": why,
                                     "at": now_ms, "outcome": "done"})  # fmt: skip
    return closed


async def confirm_serious(
    store: RedisStore,
    item_id: str,
    reviewer: str,
    why: str,
    now_ms: int,
    *,
    observe: bool = False,
) -> dict[str, Any]:
    """A reviewer confirms a serious report: it counts in full (beyond the per-organisation
    cap), a payment report holds the subject's payments, a critical one slashes its bond.
    Observation (re-verification, behavioural 0) follows only with `observe`: one
    organisation's word, even confirmed, should not undo a long record by itself unless
    the reviewer says so; independent corroboration does it without asking."""
    closed = await _close(store, item_id, "confirmed", reviewer, why, now_ms)
    policy = await store.load_policy()
    effects = [
        *serious_penalties([closed["severity"]], policy, why=CONFIRMED, observe=observe),
        *verified_in_full([closed], policy, now_ms),
    ]
    await apply_serious(store, closed["subject"], effects, policy, now_ms)
    return {**closed, "observed": observe}


async def dismiss_serious(
    store: RedisStore, item_id: str, reviewer: str, why: str, now_ms: int, *, penalise: bool
) -> dict[str, Any]:
    """A reviewer dismisses a serious report; with `penalise`, the false report counts as
    a verified failure of its reporter."""
    closed = await _close(store, item_id, "dismissed", reviewer, why, now_ms)
    if closed.get("domain") == "payment":
        others = await store.serious.list(subject=closed["subject"])
        if not any(item.get("domain") == "payment" for item in others):
            await store.release_payments(closed["subject"])
    if penalise:
        policy = await store.load_policy()
        await store.add_outcome(
            closed["reporter"], success=False, weight=1.0, now_ms=now_ms, policy=policy
        )
    return {**closed, "penalised": closed["reporter"] if penalise else None}
