"""Ops commands for evidence: issue credentials, attestations and bonds, record a document,
show a peer's evidence, set the codebase it must attest; revoke a key or evidence."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

import orjson

from broker.cli.support import command, json_flag, payment_of, print_json, read_json, say
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.identity import public_key_from_did
from broker.errors import ConfigError
from broker.sdk.keyfile import load_key

DAY_MS = 86_400_000


def _store(config: BrokerConfig) -> Any:
    from broker.app import open_store

    return open_store(config)


async def cmd_evidence(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Issue evidence with an issuer key, record a document, show a peer's evidence, or set
    the codebase a peer must attest."""
    if args.action == "issue":
        return _issue(args)
    store = _store(config)
    try:
        if args.action == "expect-code":
            return await _expect_code(store, args)
        if args.action == "present":
            return await _record(store, args)
        if not args.subject:
            raise ConfigError("evidence show needs --subject DID")
        public_key_from_did(args.subject)
        from broker.peerview import describe_evidence

        view = await describe_evidence(store, args.subject, wall_clock_ms())
    finally:
        await store.close()
    print_json(view)
    return 0


def _issue(args: argparse.Namespace) -> int:
    document = issue_evidence(args, wall_clock_ms())
    if not args.out:
        print_json(document)
        return 0
    Path(args.out).write_text(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    if args.json:
        print_json(document)
    else:
        print(args.out)
    role = {"credential": "identity", "attestation": "attestation", "bond": "stake"}[args.type]
    say(f"issued {args.type} {document['id']} about {args.subject}, signed by "
        f"{document['issuer']}, valid {args.days:g} days; written to {args.out}")  # fmt: skip
    say(f"it counts only while its issuer is on the trust list for {role} "
        f"(trust-broker issuer add {document['issuer']} --role {role})")  # fmt: skip
    say(f"next: the agent presents it: trust-broker present --key KEY --agent-url URL {args.out}")
    return 0


def issue_evidence(args: argparse.Namespace, now: int) -> dict[str, Any]:
    """A credential, attestation or bond signed with --issuer-key."""
    from broker.core.evidence import sign_evidence

    if not args.issuer_key or not args.subject:
        raise ConfigError("evidence issue needs --issuer-key FILE and --subject DID")
    issuer = load_key(Path(args.issuer_key))
    public_key_from_did(args.subject)
    common = {
        "id": f"{args.type}-{uuid.uuid4().hex}",
        "subject": args.subject,
        "issued_at": now,
        "expires_at": now + int(args.days * DAY_MS),
    }
    if args.type == "credential":
        return sign_evidence(issuer, "credential", organisation=args.organisation, **common)
    if args.type == "attestation":
        return sign_evidence(
            issuer, "attestation", codebase_hash=args.codebase_hash,
            config_hash=args.config_hash, **common,
        )  # fmt: skip
    if not args.amount:
        raise ConfigError("evidence issue bond needs --amount, e.g. --amount 1000")
    bond = payment_of(args.amount, args.currency)
    assert bond is not None
    return sign_evidence(
        issuer, "bond", amount_minor=bond.minor_units, currency=bond.currency, **common
    )


async def _expect_code(store: Any, args: argparse.Namespace) -> int:
    if not args.subject or not args.codebase_hash:
        raise ConfigError("evidence expect-code needs --subject DID and --codebase-hash HASH")
    public_key_from_did(args.subject)
    await store.set_expected_code(args.subject, args.codebase_hash)
    if args.json:
        print_json({"subject": args.subject, "codebase_hash": args.codebase_hash})
    else:
        print(f"{args.subject} must attest codebase {args.codebase_hash}")
    return 0


async def _record(store: Any, args: argparse.Namespace) -> int:
    from broker.router.agreements import apply_document

    if not args.file:
        raise ConfigError("evidence present needs --file FILE")
    document = read_json(args.file, "document")
    # Ops with direct store access: any signed document, checked like any other.
    accepted = await apply_document(store, document, wall_clock_ms(), presenter=None)
    if args.json:
        print_json({"recorded": accepted, "type": document.get("type")})
    else:
        print(f"recorded {document.get('type')} {accepted}")
    return 0


async def cmd_revoke(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Revoke a key or a piece of evidence; every router stops accepting it."""
    store = _store(config)
    try:
        if args.what == "key":
            public_key_from_did(args.target)
            await store.revoke_key(args.target)
        elif not await store.revoke_evidence(args.target):
            raise ConfigError(
                f"no evidence {args.target!r} was ever recorded here: check the id "
                "(`trust-broker evidence show --subject DID` lists a peer's)"
            )
    finally:
        await store.close()
    if args.json:
        print_json({"revoked": args.what, "target": args.target})
    else:
        print(f"revoked {args.what} {args.target}: every router refuses it within a second")
    return 0


def add_commands(sub: Any) -> None:
    """Register evidence and revoke on the trust-broker parser."""
    p = command(
        sub, "evidence",
        summary="issue, record or show credentials, attestations and bonds",
        description="issue TYPE: sign a credential (binds --subject to --organisation), a "
        "code attestation (--codebase-hash, --config-hash) or a stake bond (--amount, "
        "--currency) with --issuer-key. present --file: ops records a signed document "
        "directly (agents present their own with `trust-broker present`). show --subject: a "
        "peer's recorded evidence and its standing. expect-code --subject --codebase-hash: "
        "the codebase the peer must attest (another hash is reported as "
        "attestation_mismatch).",
        examples=["trust-broker evidence issue credential --issuer-key issuer.key --subject "
                  "\"$ALICE\" --organisation \"Acme Research\" --out alice-credential.json",
                  "trust-broker evidence issue bond --issuer-key custodian.key --subject "
                  "\"$ALICE\" --amount 1000 --currency USD --out alice-bond.json",
                  "trust-broker evidence show --subject \"$ALICE\"",
                  "trust-broker evidence expect-code --subject \"$ALICE\" "
                  "--codebase-hash sha256:ab12"],
    )  # fmt: skip
    p.add_argument("action", choices=["issue", "present", "show", "expect-code"])
    p.add_argument(
        "type",
        nargs="?",
        default="credential",
        choices=["credential", "attestation", "bond"],
        help="what to issue",
    )
    p.add_argument("--issuer-key", help="issuer key file (issue)")
    p.add_argument("--subject", help="agent DID the evidence is about (issue, show, expect-code)")
    p.add_argument("--organisation", default="", help="organisation (credential)")
    p.add_argument("--codebase-hash", default="", help="e.g. sha256:... (attestation, expect-code)")
    p.add_argument("--config-hash", default="", help="e.g. sha256:... (attestation)")
    p.add_argument("--amount", help="bond amount as a decimal string (bond)")
    p.add_argument("--currency", default="USD", help="bond currency (bond)")
    p.add_argument("--days", type=float, default=30.0, help="validity in days (issue)")
    p.add_argument("--out", help="write the document here (issue; else it goes to stdout)")
    p.add_argument("--file", help="signed document to verify and record (present)")
    json_flag(p)
    p.set_defaults(handler=cmd_evidence)

    p = command(
        sub, "revoke",
        summary="revoke a key or a piece of evidence",
        description="key DID: every router blocks the key within a second (revoked_key), and "
        "its blocks can never be released. evidence ID: a credential, attestation or bond "
        "stops counting everywhere.",
        examples=["trust-broker revoke key \"$ALICE\"",
                  "trust-broker revoke evidence credential-3f2a…"],
    )  # fmt: skip
    p.add_argument("what", choices=["key", "evidence"])
    p.add_argument("target", help="DID (key) or evidence id")
    json_flag(p)
    p.set_defaults(handler=cmd_revoke)
