"""Outcomes whose commit is in doubt: tx.commit was sent and commit-ok never came.

RabbitMQ does not make a transaction atomic across queues, so when the node running a
router's channel dies mid-commit, any part of the commit may have taken effect: a
message's ack without its outcome's publish (the message is settled and its outcome
lost), the publish without the ack (the message comes back and its retry is routed once
more), both, or neither (it comes back and is routed once). Nobody can tell which from the
router's side (docs/RELIABILITY.md, "What is still open"), so the router lists every such
outcome here, and `trust-broker in-doubt` shows what became of each: `came back` once its
message was routed again (the ack had not taken effect), `unresolved` while it was not
(the ack took effect: its outcome reached its destination, or was lost with the node).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import orjson

from broker.store.base import StoreBase, text
from broker.store.batch import Command

# The newest entries kept; a node's death under load lists at most a few commits' worth.
IN_DOUBT_MAX = 100_000


class InDoubtEntry(TypedDict):
    """One outcome whose commit is in doubt (no message body: ids and routing only)."""

    id: str  # the envelope id ('' for bytes that did not decode)
    sender: str
    action: str  # deliver, block or escalate
    exchange: str  # where the outcome was published
    routing_key: str
    trace_id: str
    holder: str  # the router session that sent the commit
    at_ms: int
    digest: str  # SHA-256 of the ingress bytes


class InDoubtView(InDoubtEntry):
    """An entry as read back, with what became of its message since."""

    status: str  # 'came back', 'unresolved' or 'expired'


class InDoubtOutcomes(StoreBase):
    """The in-doubt list: written by routers, read by ops."""

    async def note_in_doubt(self, entries: Sequence[InDoubtEntry]) -> None:
        """Append entries to the list (the oldest beyond IN_DOUBT_MAX are dropped)."""
        key = self.keys.in_doubt
        commands = [
            Command.plain("XADD", key, "MAXLEN", "~", IN_DOUBT_MAX, "*", "e", orjson.dumps(entry))
            for entry in entries
        ]
        if commands:
            await self._together(*commands)

    async def in_doubt(self, *, limit: int = 100) -> list[InDoubtView]:
        """The newest `limit` entries, newest first, each with its message's status now."""
        rows: Any = await self._call(self._redis.xrevrange(self.keys.in_doubt, count=limit))
        entries: list[InDoubtEntry] = [orjson.loads(fields[b"e"]) for _, fields in rows or []]
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.get(self.keys.seen(entry["id"]))
            claims = await self._call(pipe.execute()) if entries else []
        return [
            InDoubtView(**entry, status=status_of(entry, claim))
            for entry, claim in zip(entries, claims, strict=True)
        ]


def status_of(entry: InDoubtEntry, claim: Any) -> str:
    """What the message's claim ('<digest>|pending|...' or '<digest>|done|...') says now:
    'untracked' for bytes that never decoded (no claim), 'expired' once the claim's TTL
    (dedup_ttl_ms) has passed."""
    if not entry["id"]:
        return "untracked"
    if claim is None:
        return "expired"
    state = text(claim).split("|", 2)[1]
    return "came back" if state == "done" else "unresolved"
