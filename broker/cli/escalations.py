"""Security's commands on escalations: list them, approve, reject, ask the sender for more
evidence, re-score, expire."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from broker.cli.review import REVIEWER_HELP, T, decision_flags, report, reviewer_of
from broker.cli.support import command, print_json, say, score
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.records import UNPARSEABLE, iso_ms
from broker.errors import ConfigError

# `escalations rescore` exits with this when the escalation stays pending.
STILL_PENDING = 3


async def cmd_escalations_list(args: argparse.Namespace, config: BrokerConfig) -> int:
    """List pending escalations (left in the queue) with their explanation."""
    from broker.app import open_store
    from broker.ops.reading import read_escalations

    records = await read_escalations(config, limit=args.limit)
    store = open_store(config)
    try:
        awaiting = await store.awaiting_evidence()
    finally:
        await store.close()
    rows = [
        {
            **{k: v for k, v in record.items() if k != "raw_b64"},
            "awaiting_evidence": awaiting.get(str(record.get("trace_id"))),
        }
        for record in records
    ]
    if args.json:
        print_json(rows)
        return 0
    now = wall_clock_ms()
    for row in rows:
        _print_escalation(row, now)
    say(f"{len(rows)} pending escalation(s)")
    return 0


def _print_escalation(row: dict[str, Any], now: int) -> None:
    decision = row.get("decision") or {}
    at = row.get("received_ms")
    age = f"waiting {(now - at) // 1000} s" if isinstance(at, int) else "time unknown"
    print(f"{row['trace_id']}  {row['reason']}  {age}")
    if row.get(UNPARSEABLE):
        print(f"    unparseable: {row[UNPARSEABLE]}")
    else:
        print(f"    from {row.get('sender')}")
        print(f"    to   {row.get('recipient')}")
        print(
            f"    message {row.get('message_id')}  composite {score(decision.get('composite'))}"
            f"  tier {decision.get('tier')}"
        )
        print(
            f"    reasons {', '.join(decision.get('reasons') or [])}; "
            f"weakest {decision.get('weakest')}"
        )
    print(f"    remediation: {decision.get('remediation') or '-'}")
    request = row.get("awaiting_evidence")
    if request:
        since = iso_ms(int(request["requested_at"]))
        print(
            f"    evidence requested from the sender at {since} by {request.get('reviewer')}"
            f" ({request.get('why') or 'no reason given'}); re-scored on every sweep"
        )


async def cmd_escalations_decide(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Approve (deliver) or reject (block, failure recorded) one escalation."""
    from broker.app import open_store
    from broker.ops.escalations import approve_escalation, reject_escalation

    reviewer = reviewer_of(args)
    decide = approve_escalation if args.escalation_command == "approve" else reject_escalation
    store = open_store(config)
    try:
        review = await decide(config, store, args.trace_id, reviewer, args.why, wall_clock_ms())
    finally:
        await store.close()
    verb = "approved" if args.escalation_command == "approve" else "rejected"
    return report(args, review, f"{verb} {review['message_id']} from {review['sender']}")


async def cmd_escalations_request_evidence(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Ask the sender for more evidence; the escalation is re-scored on every sweep."""
    from broker.app import open_store
    from broker.ops.escalations import request_evidence
    from broker.sdk.keyfile import load_key

    reviewer = reviewer_of(args)
    try:
        broker_key = load_key(Path(config.broker_key_file))
    except ConfigError as exc:
        raise ConfigError(f"the request is signed with the broker's own key: {exc}") from None
    store = open_store(config)
    try:
        request = await request_evidence(
            config, store, broker_key, args.trace_id, reviewer, args.why, wall_clock_ms()
        )
    finally:
        await store.close()
    if args.json:
        print_json({"request_id": request.id, "sent_to": request.recipient, "body": request.body})
    else:
        print(f"asked {request.recipient} for more evidence (request {request.id})")
    return 0


async def cmd_escalations_rescore(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Decide one escalation again with the sender's current standing."""
    from broker.app import open_store
    from broker.ops.escalations import rescore_escalation

    reviewer = reviewer_of(args)
    store = open_store(config)
    try:
        result = await rescore_escalation(
            config, store, args.trace_id, wall_clock_ms(), reviewer=reviewer
        )
    finally:
        await store.close()
    decision = result.decision
    if args.json:
        print_json(
            {"trace_id": result.trace_id, "delivered": result.delivered,
             "decision": decision.to_dict(), "review": result.review}
        )  # fmt: skip
    elif result.delivered:
        print(f"delivered: {', '.join(decision.reasons)} (score {decision.composite})")
    else:
        print(
            f"still pending: now {decision.action.value} ({', '.join(decision.reasons)}); "
            f"{decision.remediation}"
        )
    return 0 if result.delivered else STILL_PENDING


async def cmd_escalations_expire(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Move escalations older than the limit to the blocked stream now."""
    from broker.app import open_store
    from broker.ops.escalations import expire_escalations

    reviewer = reviewer_of(args)
    older_than_ms = None if args.older_than is None else int(args.older_than * 1000)
    store = open_store(config)
    try:
        expired = await expire_escalations(
            config, store, wall_clock_ms(), older_than_ms, reviewer=reviewer
        )
    finally:
        await store.close()
    if args.json:
        print_json(expired)
    else:
        for review in expired:
            print(f"expired {review['trace_id']} (message {review['message_id']})")
        print(f"{len(expired)} escalation(s) expired", file=sys.stderr)
    return 0


def add_commands(sub: Any, *, default_reviewer: str | None = None) -> None:
    """Register `escalations` on the trust-broker parser; decisions are attributed to
    `default_reviewer` unless --reviewer says otherwise."""
    _add_escalations(sub)
    sub.choices["escalations"].set_defaults(default_reviewer=default_reviewer)


def _add_escalations(sub: Any) -> None:
    p = command(
        sub, "escalations",
        summary="list and decide messages waiting for a human",
        description="Escalated messages wait in trust.escalations until approved, rejected "
        "or expired (policy escalations.expire_after_ms). Without an action: list them, "
        "with their remediation and whether evidence was requested.",
        examples=["trust-broker escalations", f"trust-broker escalations approve {T} --why "
                  "\"invoice 4411 checked\""],
    )  # fmt: skip
    p.add_argument("--limit", type=int, default=50, help="escalations to list (default 50)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    p.set_defaults(handler=cmd_escalations_list)
    actions = p.add_subparsers(dest="escalation_command", metavar="ACTION")

    a = command(
        actions, "list",
        summary="pending escalations with their explanation",
        description="Every pending escalation, oldest first, read without taking it off the "
        "queue: sender, recipient, amount, score, reasons, remediation, evidence requests.",
        examples=["trust-broker escalations list --json"],
    )  # fmt: skip
    a.add_argument("--limit", type=int, default=argparse.SUPPRESS, help="escalations to list")
    a.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    a.set_defaults(handler=cmd_escalations_list)

    for name, summary, description, why in (
        ("approve", "deliver it to its recipient (at most once)",
         "Take the escalation off the queue and deliver its original bytes (signature "
         "verified again) in one transaction.", "invoice 4411 checked"),
        ("reject", "block it and record a failure for the sender",
         "Move it to the blocked stream as escalation_rejected and count a verified failure "
         "of its sender.", "unknown payee"),
        ("request-evidence", "ask the sender for more evidence",
         "Send the sender a broker-signed request (kind request, body type "
         "trust-broker/evidence-request) naming the message and --why, which the sender "
         "reads with `trust-broker receive`. The escalation is re-scored on every sweep "
         "until decided.", "need a bond for this amount"),
    ):  # fmt: skip
        a = command(actions, name, summary=summary, description=description,
                    examples=[f"trust-broker escalations {name} {T} --why \"{why}\""])  # fmt: skip
        decision_flags(a, why=True)
        handler = cmd_escalations_request_evidence if name == "request-evidence" else None
        a.set_defaults(handler=handler or cmd_escalations_decide)

    a = command(
        actions, "rescore",
        summary="decide it again with the sender's current standing",
        description=f"Deliver it if the decision now says deliver; else it stays pending "
        f"and the exit status is {STILL_PENDING}.",
        examples=[f"trust-broker escalations rescore {T}"],
    )  # fmt: skip
    decision_flags(a, why=False)
    a.set_defaults(handler=cmd_escalations_rescore)

    a = command(
        actions, "expire",
        summary="move escalations older than the limit to the blocked stream now",
        description="What the routers' sweeper does on its own: escalations older than "
        "--older-than seconds (default: the policy's escalations.expire_after_ms) move to "
        "the blocked stream as escalation_expired.",
        examples=["trust-broker escalations expire --older-than 3600"],
    )  # fmt: skip
    a.add_argument("--older-than", type=float, help="seconds")
    a.add_argument("--reviewer", help=REVIEWER_HELP)
    a.add_argument("--json", action="store_true", help="machine-readable JSON output")
    a.set_defaults(handler=cmd_escalations_expire)
