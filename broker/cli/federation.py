"""`trust-broker federation`: portable trust between deployments.

Agents ask their broker for a trust record (`export`, over AMQP, answered only to the
agent itself) and present it elsewhere with `trust-broker present STATUS_LIST CREDENTIAL`.
Ops issue records and status lists straight from the store with the broker key, revoke
what they issued, and sign identity credentials as W3C VCs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.cli.support import command, json_flag, print_json, say, write_json
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.identity import public_key_from_did
from broker.errors import ConfigError
from broker.sdk.keyfile import load_key

DAY_MS = 86_400_000


def _store(config: BrokerConfig) -> Any:
    from broker.app import open_store

    return open_store(config)


def _broker_key(config: BrokerConfig) -> Any:
    path = Path(config.broker_key_file)
    if not path.exists():
        raise ConfigError(f"no broker key at {path}: start the router once (it creates it)")
    return load_key(path)


def _emit(
    args: argparse.Namespace, credential: dict[str, Any], status: dict[str, Any] | None
) -> None:
    if args.out:
        write_json(args.out, credential)
        say(f"wrote {credential['type'][-1]} {credential['id']} to {args.out}")
    if status is not None and getattr(args, "status_out", None):
        write_json(args.status_out, status)
        say(f"wrote the issuer's status list to {args.status_out}: present it first")
    if args.json or not args.out:
        print_json(
            credential if status is None else {"credential": credential, "status_list": status}
        )


async def cmd_export(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Ask this agent's broker for a trust record about it (SDK: AgentClient.export_trust)."""
    from broker.cli.agent import connected

    async with connected(args, config) as client:
        reply = await client.export_trust()
    _emit(args, reply["credential"], reply["status_list"])
    return 0


async def cmd_issue(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Ops: issue a trust record about a peer straight from the store."""
    from broker.federation.export import current_status_list, export_record

    public_key_from_did(args.subject)
    key, store, now = _broker_key(config), _store(config), wall_clock_ms()
    try:
        credential = await export_record(store, key, args.subject, now)
        status = await current_status_list(store, key, now)
    finally:
        await store.close()
    _emit(args, credential, status)
    return 0


async def cmd_status_list(args: argparse.Namespace, config: BrokerConfig) -> int:
    """The broker's signed revocation status list: asked over AMQP with an agent's --key
    (SDK: AgentClient.status_list), else read by ops from the store."""
    if args.key:
        from broker.cli.agent import connected

        async with connected(args, config) as client:
            _emit(args, await client.status_list(), None)
        return 0
    from broker.federation.export import current_status_list

    key, store = _broker_key(config), _store(config)
    try:
        status = await current_status_list(store, key, wall_clock_ms())
    finally:
        await store.close()
    _emit(args, status, None)
    return 0


async def cmd_revoke(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Ops: revoke a trust record this broker issued (its status list bit is set)."""
    from broker.federation.export import revoke_issued

    store = _store(config)
    try:
        done = await revoke_issued(store, args.credential_id)
    finally:
        await store.close()
    if not done:
        raise ConfigError(f"this broker never issued {args.credential_id}")
    if args.json:
        print_json({"revoked": args.credential_id})
    else:
        say(f"revoked {args.credential_id}: its issuer's status list now says so")
    return 0


async def cmd_identity(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Sign an IdentityCredential (W3C VC, eddsa-jcs-2022) with an issuer key."""
    from broker.federation.record import identity_credential
    from broker.federation.vc import issue_credential

    public_key_from_did(args.subject)
    issuer, now = load_key(Path(args.issuer_key)), wall_clock_ms()
    unsigned = identity_credential(issuer, args.subject, args.organisation, now, args.days * DAY_MS)
    _emit(args, issue_credential(issuer, unsigned, now), None)
    return 0


_HANDLERS = {
    "export": cmd_export,
    "issue": cmd_issue,
    "status-list": cmd_status_list,
    "revoke": cmd_revoke,
    "identity": cmd_identity,
}


async def cmd_federation(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Dispatch `trust-broker federation ACTION`."""
    if args.action in ("issue", "identity") and not args.subject:
        raise ConfigError(f"federation {args.action} needs --subject DID")
    if args.action == "identity" and not (args.issuer_key and args.organisation):
        raise ConfigError("federation identity needs --issuer-key and --organisation")
    if args.action == "export" and not args.key:
        raise ConfigError("federation export needs the agent's --key")
    if args.action == "revoke" and not args.credential_id:
        raise ConfigError("federation revoke needs the credential id")
    return await _HANDLERS[args.action](args, config)


def add_commands(sub: Any) -> None:
    """Register `trust-broker federation`."""
    p = command(
        sub, "federation",
        summary="portable trust: export trust records, status lists, identity VCs",
        description="export --key K: this agent's trust record from its broker (W3C VC "
        "TrustRecordCredential, eddsa-jcs-2022), with the broker's status list; present both "
        "to another broker with `trust-broker present STATUS CREDENTIAL`. issue --subject DID: "
        "ops issue one from the store. status-list [--key K]: the broker's signed revocation "
        "list (over AMQP with an agent's key, else from the store). "
        "revoke ID: revoke a record this broker issued. identity --issuer-key --subject "
        "--organisation: sign an IdentityCredential VC.",
        examples=["trust-broker federation export --key alice.key --agent-url \"$ALICE_URL\" "
                  "--out alice-record.json --status-out broker-a-status.json",
                  "trust-broker present --key alice.key broker-a-status.json alice-record.json",
                  "trust-broker federation revoke urn:uuid:0f6c...",
                  "trust-broker federation identity --issuer-key issuer.key --subject \"$ALICE\" "
                  "--organisation 'Acme Research' --out alice-identity.json"],
    )  # fmt: skip
    p.add_argument("action", choices=sorted(_HANDLERS))
    p.add_argument("credential_id", nargs="?", default="", help="revoke: the credential id")
    p.add_argument("--key", help="export, status-list: the agent's key file")
    p.add_argument("--agent-url", help="export, status-list: the agent's AMQP URL "
                   "(env TRUST_AGENT_URL)")  # fmt: skip
    p.add_argument("--subject", help="issue, identity: the agent's DID")
    p.add_argument("--issuer-key", help="identity: the issuer's key file")
    p.add_argument("--organisation", help="identity: the organisation the issuer vouches for")
    p.add_argument("--days", type=int, default=365, help="identity: validity in days")
    p.add_argument("--out", help="write the credential here (else it goes to stdout)")
    p.add_argument("--status-out", help="export, issue: write the status list here")
    json_flag(p)
    p.set_defaults(handler=cmd_federation)
