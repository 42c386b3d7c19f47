"""The record of review decisions in Redis: each action logged under its trace id (refused
or not), the claim that lets a decision happen at most once, and the checks a decision
makes there first (a revoked sender, the sender's daily payment total)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from broker.clock import wall_clock_ms
from broker.core.envelope import Envelope
from broker.core.scoring.stake import reference_minor
from broker.errors import ReviewError
from broker.ops.rules import describe_review
from broker.store.redis import RedisStore

log = logging.getLogger(__name__)


_NO_CAP = 2**53


@contextlib.asynccontextmanager
async def audited(
    store: RedisStore, trace_id: str, action: str, reviewer: str, why: str, now_ms: int
) -> AsyncIterator[dict[str, Any]]:
    """Log the action on the trace's review log, refused or not."""
    entry: dict[str, Any] = {
        "action": action, "reviewer": reviewer, "why": why, "at": now_ms, "outcome": "done",
    }  # fmt: skip
    try:
        yield entry
    except ReviewError as exc:
        refused = {**entry, "outcome": "refused", "code": exc.code, "message": str(exc)}
        await store.log_review(trace_id, refused)
        raise
    if entry.pop("recorded", True):
        await log_done(store, trace_id, entry)


async def log_done(store: RedisStore, trace_id: str, entry: dict[str, Any]) -> None:
    """On the trace's review log, and as a later event of the decision's flight record."""
    await store.log_review(trace_id, entry)
    event = {"event": "review", **{k: v for k, v in entry.items() if k != "at"}}
    await store.add_trace_event(trace_id, {**event, "at_ms": entry["at"]})


async def record_claim(
    store: RedisStore,
    trace_id: str,
    claim: dict[str, Any],
    *,
    take_over_pending: bool,
    replaces: str = "",
) -> None:
    """Claim the decision on `trace_id` (at most one claim succeeds); refused when someone
    already decided it."""
    earlier = await store.claim_review(
        trace_id, claim, take_over_pending=take_over_pending, replaces=replaces
    )
    if earlier is not None:
        raise ReviewError(f"already decided: {describe_review(earlier)}", code="already_decided")


async def mark_done(
    store: RedisStore, trace_id: str, claim: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The claim, recorded as carried out; returns the review record."""
    done = {**claim, **extra, "state": "done"}
    await store.finish_review(trace_id, done)
    return done


async def check_not_revoked(store: RedisStore, env: Envelope, now_ms: int) -> None:
    """Refuse to deliver for a sender whose key is revoked now."""
    if (await store.peer(env.sender, now_ms, cached=False)).revoked:
        raise ReviewError("the sender's key is revoked", code="revoked_key")


async def count_payment(store: RedisStore, env: Envelope, now_ms: int) -> None:
    """A payment a reviewer let through still counts in the sender's rolling 24 h total
    (keyed by message id: a retry does not count it twice), in reference units."""
    if env.payment is None:
        return
    payment = env.payment
    money = (await store.load_policy()).currency
    amount = reference_minor(payment.minor_units, payment.currency, money, round_up=True)
    if amount is None:
        log.warning("approved payment %s in %s has no rate: not counted in the daily sum",
                    env.id, payment.currency)  # fmt: skip
        return
    await store.reserve_spend(env.sender, amount, _NO_CAP, env.id, now_ms)


def current_ms(now_ms: int | None) -> int:
    """`now_ms` when the caller gave one, else the wall clock's."""
    return wall_clock_ms() if now_ms is None else now_ms
