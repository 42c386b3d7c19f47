"""Ops commands for agents and issuers: provision an agent, keep the issuer trust list."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.cli.lookups import peer_standing
from broker.cli.support import command, json_flag, print_json, say, standing_lines
from broker.config import BrokerConfig
from broker.core.identity import public_key_from_did
from broker.errors import ConfigError

ISSUER_ROLES = ("identity", "attestation", "stake", "federation")
# What a role lets an issuer's documents count for, said when it is granted.
ROLE_MEANING = {
    "identity": "credentials it signs verify an agent's identity",
    "attestation": "code attestations it signs count",
    "stake": "bonds it signs count as stake (and it may slash them)",
    "federation": "it may speak for another deployment",
}


def _store(config: BrokerConfig) -> Any:
    from broker.app import open_store

    return open_store(config)


async def cmd_provision(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Create an agent's AMQP user, queue and recipient profile; print its AMQP URL."""
    from broker.core.state import RecipientProfile
    from broker.ops.provision import agent_amqp_url, provision_agent

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
        view = await peer_standing(store, args.did)
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
    from broker.core.state import IssuerRole

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


def add_commands(sub: Any) -> None:
    """Register provision and issuer on the trust-broker parser."""
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
