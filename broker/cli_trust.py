"""`trust-broker issuer` and `trust-broker reports`: the trust list, and serious reports
waiting for a security reviewer."""

from __future__ import annotations

import argparse
from typing import Any

from broker.app import open_store
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.errors import ConfigError
from broker.identity import public_key_from_did
from broker.review import iso_ms
from broker.state import IssuerRole

ROLE_HELP = (
    "identity: identity credentials; attestation: code attestations; stake: bonds and "
    "slashes (a custodian of collateral); federation: other brokers' trust credentials"
)


def _print_json(value: Any) -> None:
    from broker.cli import print_json

    print_json(value)


async def cmd_issuer(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Show or change the issuer trust list (who may sign which kind of evidence)."""
    roles = {IssuerRole(role) for role in args.role or ()}
    store = open_store(config)
    try:
        if args.action in ("add", "remove"):
            if not args.did:
                raise ConfigError(f"issuer {args.action} needs the issuer's DID")
            public_key_from_did(args.did)
        if args.action == "add":
            if not roles:
                raise ConfigError(f"issuer add needs at least one --role ({ROLE_HELP})")
            await store.add_issuer(args.did, roles)
        elif args.action == "remove":
            await store.remove_issuer(args.did, roles or None)
        issuers = await store.issuer_roles()
    finally:
        await store.close()
    if args.json:
        _print_json({"issuers": {did: sorted(roles) for did, roles in sorted(issuers.items())}})
    elif not issuers:
        print("(no trusted issuers)")
    else:
        for did, held in sorted(issuers.items()):
            print(f"{did}  {','.join(sorted(held))}")
    return 0


async def cmd_reports_list(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Serious reports waiting for corroboration or a reviewer, oldest first."""
    if args.subject:
        public_key_from_did(args.subject)
    store = open_store(config)
    try:
        items = await store.serious.list(subject=args.subject or None)
    finally:
        await store.close()
    if args.json:
        _print_json({"open": items})
        return 0
    if not items:
        print("no serious reports waiting for review")
        return 0
    for item in items:
        print(
            f"{item['id']}  {iso_ms(item['at_ms'])}  {item['severity']:<8} {item['outcome']:<16}"
            f" about {item['subject']}\n{'':34}from {item['reporter']} (weight {item['weight']},"
            f" {item['units']} failure units applied)"
        )
    return 0


async def cmd_reports_decide(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Confirm a serious report (its subject goes under observation) or dismiss it."""
    from broker.report_review import confirm_serious, dismiss_serious

    if not args.reviewer:
        raise ConfigError("say who is deciding: --reviewer NAME (it is kept on record)")
    store = open_store(config)
    try:
        now = wall_clock_ms()
        if args.decision == "confirm":
            closed = await confirm_serious(store, args.id, args.reviewer, args.why, now)
        else:
            closed = await dismiss_serious(
                store, args.id, args.reviewer, args.why, now, penalise=args.penalise
            )
    finally:
        await store.close()
    if args.json:
        _print_json(closed)
    else:
        print(f"{closed['state']}: {args.decision} by {args.reviewer} ({args.why})")
        if args.decision == "confirm":
            print(f"  {closed['subject']} is under observation and must re-verify its key")
        elif closed.get("penalised"):
            print(f"  the reporter {closed['reporter']} takes a verified failure")
    return 0


def add_trust_commands(sub: Any, *, default_reviewer: str | None) -> None:
    """Register `issuer` and `reports` on the trust-broker parser."""
    p = sub.add_parser(
        "issuer",
        help="show or change the issuer trust list (who may sign which evidence)",
        description="Evidence counts only from an issuer trusted for its kind. "
        f"Roles: {ROLE_HELP}. Example: trust-broker issuer add did:key:z6Mk... "
        "--role identity",
    )
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("did", nargs="?", default="", help="the issuer's did:key")
    p.add_argument(
        "--role", action="append", choices=[role.value for role in IssuerRole],
        help="a role to add or remove (repeatable; remove without --role removes all)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=cmd_issuer)

    p = sub.add_parser(
        "reports",
        help="serious reports waiting for a security reviewer",
        description="A high or critical report puts its subject under observation only "
        "when independent organisations corroborate it, or a reviewer confirms it here. "
        "Example: trust-broker reports confirm ID --why 'invoice fraud checked'",
    )
    actions = p.add_subparsers(dest="reports_action", required=True)
    q = actions.add_parser("list", help="open serious reports, oldest first")
    q.add_argument("--subject", help="only reports about this DID")
    q.add_argument("--json", action="store_true", help="JSON output")
    q.set_defaults(handler=cmd_reports_list)
    for decision, text in (
        ("confirm", "confirm: the subject goes under observation (critical: bond slashed)"),
        ("dismiss", "dismiss: the report stays at its capped failure units"),
    ):
        q = actions.add_parser(decision, help=text)
        q.add_argument("id", help="the report's review id (32 hex characters)")
        q.add_argument("--why", required=True, help="why: kept on record")
        q.add_argument("--reviewer", default=default_reviewer, help="who decides")
        q.add_argument("--json", action="store_true", help="print the closed item as JSON")
        if decision == "dismiss":
            q.add_argument(
                "--penalise", action="store_true",
                help="count the false report as a verified failure of its reporter",
            )  # fmt: skip
        q.set_defaults(handler=cmd_reports_decide, decision=decision)
