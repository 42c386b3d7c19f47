"""What each console page reads, shared by the HTML pages and the JSON API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.clock import wall_clock_ms
from broker.console.state import Console
from broker.console.views import (
    PEER_SORTS,
    feed_row,
    history_row,
    peer_rows,
    review_row,
    score_history,
    when,
)
from broker.core import policydiff
from broker.core.recorder import TRACE_ID
from broker.core.records import BlockedFilter
from broker.core.whatif import replay
from broker.errors import PolicyError
from broker.ops.reading import read_escalations, tail_blocked
from broker.ops.rules import describe_review
from broker.peerview import describe_evidence, describe_peer

# The live feed asks again for what came in a little before its newest row, because the
# log is ordered by commit time and a row's own time is when it was received; rows it
# already shows are skipped by trace id in the page.
FEED_LOOKBACK_MS = 10_000
# How long a stream read waits for one more record before taking the stream as read.
STREAM_IDLE_S = 0.4
# A peer's score history is drawn from this many of the latest decisions.
PEER_HISTORY_DECISIONS = 2000
# The peer list knows a peer's latest score from this many of the latest decisions.
PEER_LIST_DECISIONS = 20_000


async def feed(console: Console, *, after: int | None, limit: int) -> dict[str, Any]:
    """The newest decisions, newest first; with `after`, only those since then."""
    since = None if after is None else max(after - FEED_LOOKBACK_MS, 0)
    entries = await console.store.recent_decisions(limit=limit, since_ms=since)
    rows = [feed_row(entry) for entry in reversed(entries)]
    return {"decisions": rows, "now_ms": wall_clock_ms()}


async def blocked(console: Console, wanted: BlockedFilter, *, limit: int) -> dict[str, Any]:
    """The newest `limit` blocked records matching `wanted`, newest first."""
    policy = await console.store.load_policy()
    # Read backwards from the end, no further than the window's start (by time).
    entries = await tail_blocked(console.config, wanted, limit=limit, idle_timeout=STREAM_IDLE_S)
    rows = [review_row(entry.record, policy) | {"offset": entry.offset} for entry in entries]
    for row in rows:
        row["review"] = await _review_note(console, row["trace"])
    return {"records": rows[::-1], "filter": _filter_dict(wanted)}


async def _review_note(console: Console, trace: str) -> str:
    """Who released or confirmed a blocked record, if anyone did."""
    decided = await console.store.review(trace) if TRACE_ID.fullmatch(trace) else None
    return "" if decided is None else describe_review(decided)


def _filter_dict(wanted: BlockedFilter) -> dict[str, Any]:
    shown: dict[str, Any] = {n: getattr(wanted, n) or "" for n in ("sender", "recipient", "reason")}
    return shown | {"since_ms": wanted.since_ms}


async def escalations(console: Console, *, limit: int = 100) -> dict[str, Any]:
    """Escalations waiting for a human, oldest first (read without taking them), each
    with the evidence request sent to its sender, if any."""
    policy = await console.store.load_policy()
    records = await read_escalations(console.config, limit=limit)
    awaiting = await console.store.awaiting_evidence()
    rows = []
    for record in records:
        row = review_row(record, policy)
        request = awaiting.get(row["trace"])
        row["evidence_requested"] = None if request is None else {
            "at": when(request.get("requested_at")), "reviewer": request.get("reviewer"),
            "why": request.get("why") or "", "request_id": request.get("request_id"),
        }  # fmt: skip
        rows.append(row)
    return {"escalations": rows}


async def peers(
    console: Console, *, search: str = "", sort: str = "composite", limit: int = 100
) -> dict[str, Any]:
    """Known peers (senders in the decision log, and provisioned agents) with their latest
    composite, tier and last message; `search` is part of a DID."""
    if sort not in PEER_SORTS:
        raise PolicyError(f"sort by one of {', '.join(PEER_SORTS)}, not {sort[:40]!r}")
    entries = await console.store.recent_decisions(limit=PEER_LIST_DECISIONS)
    recipients = await console.store.recipient_dids()
    rows = peer_rows(entries, recipients, search, sort)
    return {"peers": rows[:limit], "total": len(rows), "search": search, "sort": sort,
            "decisions_read": len(entries)}  # fmt: skip


async def peer(console: Console, did: str) -> dict[str, Any]:
    """A peer's dimensions now, its recorded evidence and pacts, and its score history."""
    now = wall_clock_ms()
    store = console.store
    policy = await store.load_policy()
    entries = await store.recent_decisions(limit=PEER_HISTORY_DECISIONS)
    return {
        "peer": await describe_peer(store, did, now),
        "evidence": await describe_evidence(store, did, now),
        "history": score_history(entries, did, policy),
        "weights": policy.weights.model_dump(),
    }


@dataclass(frozen=True)
class WhatIfRequest:
    """A proposed single change (PATH=VALUE) and how many decisions to replay."""

    path: str
    value: str
    last: int = 1000

    @classmethod
    def parse(cls, text: str, last: int) -> WhatIfRequest:
        """From 'PATH=VALUE'; refused with the reason when malformed."""
        path, sep, value = text.partition("=")
        if not sep or not path.strip() or not value.strip():
            raise PolicyError("write the change as PATH=VALUE, e.g. thresholds.probation=0.55")
        return cls(path.strip(), value.strip(), max(1, min(last, 100_000)))


async def policy(console: Console, *, history_limit: int = 20) -> dict[str, Any]:
    """The policy in force and its recent versions."""
    current = await console.store.load_policy()
    history = await console.store.policy_history(limit=history_limit)
    return {
        "policy": current.model_dump(mode="json"),
        "version": current.version,
        "history": [history_row(entry) for entry in history],
    }


async def what_if(console: Console, proposal: WhatIfRequest) -> dict[str, Any]:
    """What replaying the last decisions under the proposal would change (nothing applied)."""
    current = await console.store.load_policy()
    proposed = policydiff.set_value(current, proposal.path, proposal.value)
    entries = await console.store.recent_decisions(limit=proposal.last)
    result = replay(entries, current, proposed).to_dict()
    changes = [list(change) for change in policydiff.diff(current, proposed)]
    return {**result, "policy_changes": changes, "proposal": f"{proposal.path}={proposal.value}"}
