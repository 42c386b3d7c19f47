"""Security's commands: the blocked-message stream and the escalation queue."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from broker.config import BrokerConfig


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


async def cmd_blocked(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Read the blocked-message stream."""
    from broker.review import read_blocked

    offset: int | str = int(args.offset) if args.offset.isdigit() else args.offset
    entries = await read_blocked(config, offset=offset, limit=args.limit)
    rows = [
        {"offset": e.offset, **{k: v for k, v in e.record.items() if k != "raw_b64"}}
        for e in entries
        if _matches(e.record, args)
    ]
    if args.json:
        _print_json(rows)
        return 0
    for row in rows:
        sender = (row["sender"] or "?")[:28]
        print(
            f"#{row['offset']:<6} {row['reason']:<24} from {sender:<28} "
            f"msg {row['message_id']}  {row['decision']['remediation'][:60]}"
        )
    print(f"{len(rows)} record(s)", file=sys.stderr)
    return 0


def _matches(record: dict[str, Any], args: argparse.Namespace) -> bool:
    if args.reason and record.get("reason") != args.reason:
        return False
    return not (args.sender and record.get("sender") != args.sender)


async def cmd_escalations(args: argparse.Namespace, config: BrokerConfig) -> int:
    """List pending escalations (left in the queue)."""
    from broker.review import read_escalations

    records = await read_escalations(config, limit=args.limit)
    rows = [{k: v for k, v in r.items() if k != "raw_b64"} for r in records]
    if args.json:
        _print_json(rows)
        return 0
    for row in rows:
        print(
            f"{row['message_id']}  {row['reason']:<22} from {row['sender'][:28]}  "
            f"score {row['decision']['composite']}"
        )
    print(f"{len(rows)} pending escalation(s)", file=sys.stderr)
    return 0


def add_review_commands(sub: Any) -> None:
    """Register `blocked` and `escalations` on the trust-broker parser."""
    p = sub.add_parser(
        "blocked",
        help="read the blocked-message stream",
        description="Read trust.blocked from an offset (first, last, next or a number) "
        "with optional filters.",
    )
    p.add_argument("--offset", default="first")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--reason", help="only this reason code")
    p.add_argument("--sender", help="only this sender DID")
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    p.set_defaults(handler=cmd_blocked)

    p = sub.add_parser("escalations", help="list pending escalations")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    p.set_defaults(handler=cmd_escalations)
