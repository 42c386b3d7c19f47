"""Ops commands: provision agents, keep the issuer trust list, issue and record evidence,
revoke, look at a peer, follow one message through the flight recorder."""

from __future__ import annotations

import argparse
import re
import uuid
from pathlib import Path
from typing import Any

import orjson

from broker.cli_support import command, json_flag, print_json, say, standing_lines
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.errors import ConfigError
from broker.identity import public_key_from_did
from broker.sdk.keyfile import load_key

DAY_MS = 86_400_000
ISSUER_ROLES = ("identity", "attestation", "stake", "federation")
# What a role lets an issuer's documents count for, said when it is granted.
ROLE_MEANING = {
    "identity": "credentials it signs verify an agent's identity",
    "attestation": "code attestations it signs count",
    "stake": "bonds it signs count as stake (and it may slash them)",
    "federation": "it may speak for another deployment",
}
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def _store(config: BrokerConfig) -> Any:
    from broker.app import open_store

    return open_store(config)


async def _standing(store: Any, did: str) -> dict[str, Any]:
    from broker.peerview import describe_peer

    view: dict[str, Any] = await describe_peer(store, did, wall_clock_ms())
    return view


# -- provision and the trust list ------------------------------------------------------------


async def cmd_provision(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Create an agent's AMQP user, queue and recipient profile; print its AMQP URL."""
    from broker.ops.provision import agent_amqp_url, provision_agent
    from broker.state import RecipientProfile

    public_key_from_did(args.did)
    profile = RecipientProfile(
        did=args.did,
        retention=args.retention,
        accepted_kinds=frozenset(args.accept_kind) if args.accept_kind else None,
        accepted_data_classes=frozenset(args.accept_class) if args.accept_class else None,
        requires_pact=args.requires_pact,
    )
    store = _store(config)
    try:
        creds = await provision_agent(config, store, profile)
        view = await _standing(store, args.did)
    finally:
        await store.close()
    url = agent_amqp_url(config, creds)
    if args.password_file:
        path = Path(args.password_file)
        path.write_text(creds.password + "\n")
        path.chmod(0o600)
    if args.json:
        topology = config.topology
        print_json({"did": args.did, "username": creds.username, "amqp_url": url,
                    "lane_exchange": topology.lane_exchange(args.did),
                    "lane_queue": topology.lane_queue(args.did), "standing": view})  # fmt: skip
        return 0
    print(url)
    say(f"provisioned {args.did}: its AMQP user may publish only to its own lane "
        f"trust.in.{args.did} and read only its own queue agent.{args.did}; its retention is "
        f"{args.retention}")  # fmt: skip
    say("the URL above holds its password: give it to the agent, do not log it")
    for line in standing_lines(view):
        say(line)
    return 0


async def cmd_issuer(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Keep the issuer trust list: who may sign what kind of evidence."""
    roles = tuple(dict.fromkeys(args.role or ()))
    if args.action == "add" and not roles:
        raise ConfigError(f"say what {args.did or 'the issuer'} is trusted for: --role "
                          f"{'|'.join(ISSUER_ROLES)} (repeatable)")  # fmt: skip
    if args.action in ("add", "remove"):
        if not args.did:
            raise ConfigError(f"issuer {args.action} needs the issuer's DID")
        public_key_from_did(args.did)
    _check_trust(args.trust, roles)
    from broker.state import IssuerRole

    store = _store(config)
    try:
        if args.action == "add":
            await store.add_issuer(args.did, {IssuerRole(role) for role in roles}, trust=args.trust)
        elif args.action == "remove":
            await store.remove_issuer(args.did, {IssuerRole(role) for role in roles} or None)
        rows = issuer_rows(await store.issuer_roles(), await store.issuer_trust())
    finally:
        await store.close()
    if args.json:
        print_json({"issuers": rows})
        return 0
    if args.action == "add":
        for role in roles:
            say(f"trusted {args.did} for {role}: {ROLE_MEANING[role]}")
    elif args.action == "remove":
        which = ", ".join(roles) if roles else "every role"
        say(f"removed {which} from {args.did}: what it signed stops counting on every router")
    for row in rows:
        trust = "" if row.get("trust") is None else f"  (trust {row['trust']})"
        print(f"{row['did']}  {', '.join(row['roles'])}{trust}")
    if not rows:
        say("(no trusted issuers: no credential, attestation or bond counts yet)")
    return 0


def _check_trust(trust: float | None, roles: tuple[str, ...]) -> None:
    if trust is not None and not (0.0 <= trust <= 1.0 and "federation" in roles):
        raise ConfigError("--trust is a weight in [0, 1] for an issuer added with --role "
                          "federation")  # fmt: skip


def issuer_rows(
    roles: dict[str, frozenset[str]], trust: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """The trust list as rows of DID, roles and (federation issuers) trust weight."""
    weights = trust or {}
    return [
        {"did": did, "roles": sorted(held)} | ({"trust": weights[did]} if did in weights else {})
        for did, held in sorted(roles.items())
    ]


# -- evidence and revocation -------------------------------------------------------------------


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
    from broker.cli_agent import payment_of
    from broker.evidence import sign_evidence

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
    from broker.agreements import apply_document
    from broker.cli_agent import read_json

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


# -- looking things up ---------------------------------------------------------------------


async def cmd_peer(args: argparse.Namespace, config: BrokerConfig) -> int:
    """A peer's dimension scores, tier, and what it needs next."""
    public_key_from_did(args.did)
    store = _store(config)
    try:
        view = await _standing(store, args.did)
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


# -- parser ---------------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """Register the ops commands on the trust-broker parser."""
    _add_agents(sub)
    _add_evidence(sub)
    _add_lookups(sub)


def _add_agents(sub: Any) -> None:
    p = command(
        sub, "provision",
        summary="create an agent's AMQP user, queue and profile; print its AMQP URL",
        description="Create AMQP user DID that may publish only to its own ingress lane "
        "(exchange trust.in.DID, queue trust.lane.DID, bounded: a full lane refuses its "
        "publishes) and read only agent.DID, declare those, and register DID as a recipient "
        "with its retention policy. Prints the agent's own AMQP URL (it holds the password) and "
        "where the agent stands.",
        examples=["ALICE_URL=$(trust-broker provision \"$ALICE\")",
                  "trust-broker provision \"$BOB\" --retention temporary --accept-kind data"],
    )  # fmt: skip
    p.add_argument("did", help="the agent's DID (from keygen)")
    p.add_argument(
        "--retention",
        default="ephemeral",
        choices=["ephemeral", "temporary", "permanent"],
        help="how long the agent keeps what it receives (drives the privacy gate)",
    )
    p.add_argument("--accept-kind", action="append", help="message kind it accepts (repeatable)")
    p.add_argument("--accept-class", action="append", help="data class it accepts (repeatable)")
    p.add_argument("--requires-pact", action="store_true", help="only accept messages under a pact")
    p.add_argument("--password-file", help="also write the AMQP password to this 0600 file")
    json_flag(p)
    p.set_defaults(handler=cmd_provision)

    p = command(
        sub, "issuer",
        summary="manage the issuer trust list (who may sign which evidence)",
        description="add DID --role ROLE: trust an issuer for a role (identity: credentials; "
        "attestation: code attestations; stake: bonds and slashes; federation: another "
        "deployment). remove DID [--role ROLE]: take a role (default every role) away; what "
        "it signed stops counting on every router. list: the trust list.",
        examples=["trust-broker issuer add \"$ISSUER\" --role identity",
                  "trust-broker issuer add \"$CUSTODIAN\" --role stake",
                  "trust-broker issuer add \"$OTHER_BROKER\" --role federation --trust 0.6",
                  "trust-broker issuer list --json",
                  "trust-broker issuer remove \"$ISSUER\" --role identity"],
    )  # fmt: skip
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("did", nargs="?", default="", help="the issuer's DID (add, remove)")
    p.add_argument("--role", action="append", choices=ISSUER_ROLES,
                   help="what the issuer is trusted for (repeatable)")  # fmt: skip
    p.add_argument("--trust", type=float, default=None,
                   help="federation issuers: how far its trust records count, 0-1 "
                   "(default: policy federation.default_trust)")  # fmt: skip
    json_flag(p)
    p.set_defaults(handler=cmd_issuer)


def _add_evidence(sub: Any) -> None:
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


def _add_lookups(sub: Any) -> None:
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
