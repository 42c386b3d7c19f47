"""`trust-broker reports`: serious reports waiting for a security reviewer.

A high or critical report puts its subject under observation only when independent
organisations corroborate it, or when a reviewer confirms it here.
"""

from __future__ import annotations

import argparse
from typing import Any

from broker.cli.support import command, json_flag, person, print_json, say
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.identity import public_key_from_did
from broker.core.records import iso_ms

REVIEWER_HELP = "who decides, kept on record (default TRUST_REVIEWER, else the OS account)"


def _store(config: BrokerConfig) -> Any:
    from broker.app import open_store

    return open_store(config)


async def cmd_reports_list(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Serious reports waiting for corroboration or a reviewer, oldest first."""
    if args.subject:
        public_key_from_did(args.subject)
    store = _store(config)
    try:
        items = await store.serious.list(subject=args.subject or None)
    finally:
        await store.close()
    if args.json:
        print_json({"open": items})
        return 0
    if not items:
        say("no serious reports waiting for review")
        return 0
    for item in items:
        print(f"{item['id']}  {iso_ms(item['at_ms'])}  {item['severity']:<8} "
              f"{item['outcome']:<16} about {item['subject']}")  # fmt: skip
        say(f"{'':34}from {item['reporter']} (weight {item['weight']}, "
            f"{item['units']} failure units applied so far; payments held: "
            f"{'yes' if item.get('domain') == 'payment' else 'no'})")  # fmt: skip
    return 0


async def cmd_reports_decide(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Confirm a serious report (it counts in full; --observe: observation too) or dismiss
    it."""
    from broker.router.report_review import confirm_serious, dismiss_serious

    reviewer = person(args.reviewer, args.default_reviewer, "--reviewer")
    store = _store(config)
    try:
        now = wall_clock_ms()
        if args.decision == "confirm":
            closed = await confirm_serious(
                store, args.id, reviewer, args.why, now, observe=args.observe
            )
        else:
            closed = await dismiss_serious(
                store, args.id, reviewer, args.why, now, penalise=args.penalise
            )
    finally:
        await store.close()
    if args.json:
        print_json(closed)
        return 0
    print(f"{closed['state']} {args.id}")
    if args.decision == "confirm":
        say(f"the report about {closed['subject']} now counts in full"
            + (" (critical: a quarter of its bond slashed)" if closed["severity"] == "critical"
               else "")
            + ("; it is under observation and must re-verify its key" if closed["observed"]
               else "; add --observe to also put it under observation"))  # fmt: skip
    elif closed.get("penalised"):
        say(f"the reporter {closed['reporter']} takes a verified failure for a false report")
    return 0


def add_commands(sub: Any, *, default_reviewer: str | None) -> None:
    """Register `reports` on the trust-broker parser."""
    p = command(
        sub, "reports",
        summary="serious reports waiting for a security reviewer",
        description="A high or critical report puts its subject under observation only when "
        "independent organisations corroborate it, or when a reviewer confirms it here with "
        "--observe; until then a report about a payment holds the subject's payments for a "
        "human. Repeated serious reports from one organisation about one subject fold into "
        "one open item (its `repeats`).",
        examples=["trust-broker reports list --json",
                  "trust-broker reports confirm ID --why 'invoice 4411 was fabricated'",
                  "trust-broker reports dismiss ID --why 'the output was right' --penalise"],
    )  # fmt: skip
    actions = p.add_subparsers(dest="reports_action", required=True, metavar="ACTION")
    q = command(
        actions, "list", summary="open serious reports, oldest first",
        description="Every high or critical report no independent organisation has "
        "corroborated yet, with who filed it and what it has done so far.",
        examples=["trust-broker reports list --subject did:key:z6Mk... --json"],
    )  # fmt: skip
    q.add_argument("--subject", help="only reports about this DID")
    json_flag(q)
    q.set_defaults(handler=cmd_reports_list)
    for decision, summary, example in (
        ("confirm", "confirm: the report counts in full (payment: payments held 30 days; "
         "critical: bond slashed); --observe also puts the subject under observation",
         "trust-broker reports confirm ID --why 'fraud confirmed with the payee' --observe"),
        ("dismiss", "dismiss: the report stays at its capped failure units",
         "trust-broker reports dismiss ID --why 'no such incident' --penalise"),
    ):  # fmt: skip
        q = command(actions, decision, summary=summary, description=summary.capitalize() + ".",
                    examples=[example])  # fmt: skip
        q.add_argument("id", help="the report's review id (32 hex characters)")
        q.add_argument("--why", required=True, help="why: kept on record")
        q.add_argument("--reviewer", help=REVIEWER_HELP)
        json_flag(q)
        if decision == "confirm":
            q.add_argument(
                "--observe", action="store_true",
                help="also put the subject under observation (re-verify, behavioural 0)",
            )  # fmt: skip
        if decision == "dismiss":
            q.add_argument(
                "--penalise", action="store_true",
                help="count the false report as a verified failure of its reporter",
            )  # fmt: skip
        q.set_defaults(handler=cmd_reports_decide, decision=decision,
                       default_reviewer=default_reviewer)  # fmt: skip
