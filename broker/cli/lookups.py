"""Commands that look things up: a peer's standing, one message's story in the flight
recorder, what a reason code means, and the outcomes whose commit is in doubt."""

from __future__ import annotations

import argparse
import re
from typing import Any

from broker.cli.support import command, json_flag, print_json, standing_lines
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.identity import public_key_from_did
from broker.core.records import iso_ms
from broker.errors import ConfigError
from broker.reasons import Reason, known, nearest

_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def _store(config: BrokerConfig) -> Any:
    from broker.app import open_store

    return open_store(config)


async def peer_standing(store: Any, did: str) -> dict[str, Any]:
    """A peer's standing as the current policy scores it now (broker/peerview.py)."""
    from broker.peerview import describe_peer

    view: dict[str, Any] = await describe_peer(store, did, wall_clock_ms())
    return view


async def cmd_peer(args: argparse.Namespace, config: BrokerConfig) -> int:
    """A peer's dimension scores, tier, and what it needs next."""
    public_key_from_did(args.did)
    store = _store(config)
    try:
        view = await peer_standing(store, args.did)
    finally:
        await store.close()
    if args.json:
        print_json(view)
        return 0
    print(f"peer      {args.did}")
    for line in standing_lines(view):
        print(line)
    return 0


async def cmd_trace(args: argparse.Namespace, config: BrokerConfig) -> int:
    """The full story of one message: received, gates, dimensions, action, commit, reports."""
    store = _store(config)
    try:
        record = await find_trace(store, args.id)
    finally:
        await store.close()
    if record is None:
        hours = config.trace_ttl_ms / 3_600_000
        raise ConfigError(
            f"no trace for {args.id}: neither a trace id nor a message id the flight recorder "
            f"still holds (it keeps {hours:g} h: TRUST_TRACE_TTL_HOURS); blocked messages stay "
            "on the stream: trust-broker blocked show ID"
        )
    print_json(record)
    return 0


async def find_trace(store: Any, given: str) -> dict[str, Any] | None:
    """The trace of a trace id or of a message id (which may look like a trace id)."""
    if _TRACE_ID.fullmatch(given):
        record: dict[str, Any] | None = await store.trace(given)
        if record is not None:
            return record
    trace_id = await store.trace_id_of(given)
    return None if trace_id is None else await store.trace(trace_id)


def reason_row(reason: Reason) -> dict[str, Any]:
    """One reason code as --json shows it."""
    info = reason.info
    return {
        "code": reason.value, "action": info.action, "explanation": info.explanation,
        "remediation": info.remediation, "releasable": reason.releasable,
        "penalisable": reason.penalisable, "not_releasable_because": info.not_releasable,
        "not_penalisable_because": info.not_penalisable,
    }  # fmt: skip


async def cmd_reasons(args: argparse.Namespace, config: BrokerConfig) -> int:
    """What each reason code (or the one asked for) means and what can be done about it."""
    if args.code is not None:
        reason = known(args.code)
        if reason is None:
            close = nearest(args.code)
            hint = f" (did you mean {close}?)" if close else ""
            raise ConfigError(
                f"{args.code!r} is no reason code{hint}; `trust-broker reasons` lists them all"
            )
        chosen: tuple[Reason, ...] = (reason,)
    else:
        chosen = tuple(r for r in Reason if args.action in (None, r.action))
    rows = [reason_row(reason) for reason in chosen]
    if args.json:
        print_json(rows if args.code is None else rows[0])
        return 0
    for row in rows:
        print(f"{row['code']}  ({row['action']})")
        print(f"    what:  {row['explanation']}")
        print(f"    next:  {row['remediation']}")
        for rule in ("not_releasable_because", "not_penalisable_because"):
            if row[rule]:
                print(f"    {rule.replace('_', ' ')}: {row[rule]}")
    return 0


async def cmd_in_doubt(args: argparse.Namespace, config: BrokerConfig) -> int:
    """The newest outcomes whose commit got no commit-ok, and what became of each."""
    if args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    store = _store(config)
    try:
        entries = await store.in_doubt(limit=args.limit)
    finally:
        await store.close()
    if args.unresolved:
        entries = [entry for entry in entries if entry["status"] == "unresolved"]
    if args.json:
        print_json(entries)
        return 0
    if not entries:
        print("no outcome in doubt" + (" is unresolved" if args.unresolved else ""))
        return 0
    for entry in entries:
        where = entry["routing_key"] or entry["exchange"]
        print(
            f"{iso_ms(entry['at_ms'])}  {entry['status']:<10}  {entry['action']:<8}  "
            f"{entry['id'] or '(undecodable)'}  {entry['sender'] or '-'} -> {where}"
        )
    unresolved = sum(entry["status"] == "unresolved" for entry in entries)
    print(
        f"{len(entries)} shown, {unresolved} unresolved: an unresolved message was acked by "
        "its commit; its outcome reached its destination or was lost with the node "
        "(docs/RELIABILITY.md, 'What is still open')"
    )
    return 0


def add_commands(sub: Any) -> None:
    """Register peer, trace, reasons and in-doubt on the trust-broker parser."""
    p = command(
        sub, "peer",
        summary="show a peer's dimension scores, tier and next step",
        description="Score an ordinary data message from DID with the current policy and show "
        "each dimension with its reasons, the weakest dimension and what the peer can do "
        "next (the ops view of `trust-broker standing`).",
        examples=["trust-broker peer \"$ALICE\"", "trust-broker peer \"$ALICE\" --json"],
    )  # fmt: skip
    p.add_argument("did", help="the peer's DID")
    json_flag(p)
    p.set_defaults(handler=cmd_peer)

    p = command(
        sub, "trace",
        summary="the full story of one message (flight recorder)",
        description="Show the recorded decision for a trace id (x-trust-trace-id) or a message "
        "id: metadata, gates, dimensions, action, commit time, and later events (reports, "
        "releases, approvals), as JSON. Content is kept only as the pact's monitoring terms "
        "allow (full, metadata only, or hashes).",
        examples=["trust-broker trace 01a2335440847160be5e665f909ae659",
                  "trust-broker trace \"$MESSAGE_ID\""],
    )  # fmt: skip
    p.add_argument("id", help="trace id (32 hex) or message id")
    json_flag(p)
    p.set_defaults(handler=cmd_trace)

    p = command(
        sub, "reasons",
        summary="what each reason code means, and what to do about it",
        description="List the reason codes a decision can carry (on the blocked stream, the "
        "escalation queue, x-trust-* headers and traces) with what each means, what the "
        "sender or ops can do, and whether a reviewer may release a message blocked for it "
        "or count the block against its sender. Needs no server.",
        examples=["trust-broker reasons", "trust-broker reasons --action escalate",
                  "trust-broker reasons clock_skew --json"],
    )  # fmt: skip
    p.add_argument("code", nargs="?", help="one reason code (default: all)")
    p.add_argument("--action", choices=["block", "escalate", "deliver"], help="only these")
    json_flag(p)
    p.set_defaults(handler=cmd_reasons)

    p = command(
        sub, "in-doubt",
        summary="outcomes whose commit got no commit-ok (a node died mid-commit)",
        description="List the newest outcomes a router published in a commit that got no "
        "commit-ok after tx.commit was sent: RabbitMQ does not make a transaction atomic "
        "across queues, so a node that dies mid-commit may apply any part of it. Each entry "
        "shows what became of its message since: 'came back' (it was redelivered and routed "
        "once: nothing lost), 'unresolved' (its ack took effect: the outcome reached its "
        "destination, or was lost with the node; ask the recipient), 'expired' (its claim "
        "is older than the dedup TTL) or 'untracked' (bytes that never decoded). Ids and "
        "routing only, never a body.",
        examples=["trust-broker in-doubt", "trust-broker in-doubt --unresolved --json",
                  "trust-broker in-doubt --limit 1000"],
    )  # fmt: skip
    p.add_argument("--limit", type=int, default=100, help="newest entries read (default 100)")
    p.add_argument("--unresolved", action="store_true", help="only the unresolved ones")
    json_flag(p)
    p.set_defaults(handler=cmd_in_doubt)
