"""What console users change: reviews (broker/ops/) and policy; shared by the HTML
forms and the JSON API. The caller's user name is recorded as reviewer or author."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from broker.console.state import Console
from broker.core import policydiff
from broker.errors import PolicyError, ReviewError
from broker.ops import blocked, escalations
from broker.ops.transaction import COMMIT_UNKNOWN

log = logging.getLogger("broker.console.actions")

# Refusals from the review operations, as HTTP statuses; anything else is a 409 conflict.
REVIEW_STATUS = {
    "bad_request": 400,
    "no_reviewer": 400,
    "no_reason": 400,
    "not_found": 404,
    "not_pending": 404,
    "already_decided": 409,
    "amqp_unavailable": 503,
    COMMIT_UNKNOWN: 503,
}
REVIEW_ACTIONS = {
    "blocked": ("release", "confirm"),
    "escalations": ("approve", "reject", "rescore", "request-evidence"),
}

Review = Callable[[Console, str, str, str, bool], Awaitable[dict[str, Any]]]


async def _release(c: Console, trace: str, who: str, why: str, _: bool) -> dict[str, Any]:
    return await blocked.release_blocked(c.config, c.store, trace, who, why)


async def _confirm(c: Console, trace: str, who: str, why: str, penalise: bool) -> dict[str, Any]:
    return await blocked.confirm_blocked(c.config, c.store, trace, who, why, penalise=penalise)


async def _approve(c: Console, trace: str, who: str, why: str, _: bool) -> dict[str, Any]:
    return await escalations.approve_escalation(c.config, c.store, trace, who, why)


async def _reject(c: Console, trace: str, who: str, why: str, _: bool) -> dict[str, Any]:
    return await escalations.reject_escalation(c.config, c.store, trace, who, why)


async def _rescore(c: Console, trace: str, who: str, why: str, _: bool) -> dict[str, Any]:
    result = await escalations.rescore_escalation(c.config, c.store, trace, reviewer=who)
    return {
        "trace_id": trace,
        "action": "rescore",
        "delivered": result.delivered,
        "reasons": list(result.decision.reasons),
        "reviewer": who,
    }


async def _request_evidence(c: Console, trace: str, who: str, why: str, _: bool) -> dict[str, Any]:
    if c.broker_key is None:
        raise ReviewError(
            "this console has no broker key to sign the request with", code="no_broker_key"
        )
    sent = await escalations.request_evidence(c.config, c.store, c.broker_key, trace, who, why)
    return {"trace_id": trace, "action": "request-evidence", "request_id": sent.id, "reviewer": who}


_REVIEWS: dict[str, Review] = {
    "release": _release,
    "confirm": _confirm,
    "approve": _approve,
    "reject": _reject,
    "rescore": _rescore,
    "request-evidence": _request_evidence,
}


async def review(
    console: Console, action: str, trace: str, who: str, why: str, *, penalise: bool = False
) -> dict[str, Any]:
    """Carry out one review action as `who`; raises ReviewError when refused."""
    result = await _REVIEWS[action](console, trace, who, why, penalise)
    log.info("console: %s did %s on trace %s", who, action, trace)
    # The claim token only lets the review drop its own claim: it stays server-side.
    return {key: value for key, value in result.items() if key != "token"}


def review_status(error: ReviewError) -> int:
    """The HTTP status for a refused review action."""
    return REVIEW_STATUS.get(error.code, 409)


async def apply_policy(
    console: Console, path: str, value: str, who: str, why: str
) -> dict[str, Any]:
    """Put one changed value in force as a new policy version, recording who and why."""
    if not why.strip():
        raise PolicyError("say why the policy changes: it is kept in the history")
    current = await console.store.load_policy()
    proposed = policydiff.set_value(current, path.strip(), value.strip())
    changes = policydiff.diff(current, proposed)
    if not changes:
        raise PolicyError("no change: the policy in force already has that value")
    saved = await console.store.save_policy(proposed, who=who, why=why.strip())
    log.info("console: %s put policy version %d in force", who, saved.version)
    return {"version": saved.version, "changes": [list(change) for change in changes]}
