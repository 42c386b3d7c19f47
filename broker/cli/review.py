"""What the review commands (blocked, escalations) share: who decides, the flags of a
decision, and how its review record is printed.

Every decision needs a reviewer name (--reviewer, else TRUST_REVIEWER, else the OS
account, which broker/cli/main.py passes in) and a reason (--why); both are kept on record.
"""

from __future__ import annotations

import argparse
from typing import Any

from broker.cli.support import person, print_json

REVIEWER_HELP = "who decides, kept on record (default TRUST_REVIEWER, else the OS account)"
T = "01a2335440847160be5e665f909ae659"  # a trace id, in the examples


def reviewer_of(args: argparse.Namespace) -> str:
    """The name the decision is recorded under."""
    return person(args.reviewer, args.default_reviewer, "--reviewer")


def decision_flags(parser: argparse.ArgumentParser, *, why: bool) -> None:
    """The trace id, --reviewer, --why (when it is required) and --json of a decision."""
    parser.add_argument("trace_id", help="trace id of the record (32 hex characters)")
    parser.add_argument("--reviewer", help=REVIEWER_HELP)
    if why:
        parser.add_argument("--why", required=True, help="why: kept on record with the decision")
    parser.add_argument("--json", action="store_true", help="print the review record as JSON")


def report(args: argparse.Namespace, review: dict[str, Any], text: str) -> int:
    """Print a decision's review record (JSON, or one line for a person)."""
    if args.json:
        print_json(review)
    else:
        print(f"{text} (by {review['reviewer']}: {review['why']})")
    return 0
