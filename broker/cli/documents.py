"""Documents an agent signs, from the command line: manifest, pact, vouch, rotate. Each is
written to --out, and with --present also handed to the broker, after which the broker's
view of the agent is printed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.cli.agent import connected, connection_flags, present, show_standing
from broker.cli.support import command, payment_of, print_json, read_json, say, write_json
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.identity import public_key_from_did
from broker.errors import ConfigError
from broker.sdk.keyfile import load_key

DAY_MS = 86_400_000


async def _written(
    args: argparse.Namespace, config: BrokerConfig, document: dict[str, Any], note: str
) -> int:
    """Write a signed document to --out; with --present, also hand it to the broker."""
    write_json(args.out, document)
    if not args.json:
        say(f"wrote {document['type'].removeprefix('trust-broker/')} {document['id']} to "
            f"{args.out}: {note}")  # fmt: skip
    reply: dict[str, Any] | None = None
    if args.present:
        async with connected(args, config) as client:
            reply = await present(client, args, [document], [args.out])
            await show_standing(client, args)
    elif not args.json:
        say(f"next: present it: trust-broker present --key KEY --agent-url URL {args.out}")
    if args.json:
        print_json({"document": document, "presented": reply})
    else:
        print(args.out)
    return 0 if reply is None or not reply.get("refused") else 1


async def cmd_manifest(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Sign a capability manifest: what this agent sends and accepts, how it keeps data."""
    from broker.core.agreements import make_manifest

    key = load_key(Path(args.key))
    accepts: dict[str, list[str]] | None = None
    if args.accept_kind or args.accept_class:
        accepts = {"kinds": _listed(args.accept_kind), "data_classes": _listed(args.accept_class)}
    document = make_manifest(
        key, now_ms=wall_clock_ms(), ttl_ms=int(args.days * DAY_MS), kinds=_listed(args.kinds),
        retention=args.retention, accepts=accepts, reversibility=args.reversibility,
        rate_limit_per_minute=args.rate_limit, may_delegate=args.may_delegate,
    )  # fmt: skip
    note = (
        "it declares what you send and accept and may only make your recipient profile "
        "stricter; being self-declared, it never raises your score"
    )
    return await _written(args, config, document, note)


async def cmd_pact_propose(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Sign a pact proposal to a recipient (it must countersign before it counts)."""
    from broker.core.agreements import make_pact

    public_key_from_did(args.with_did)
    key = load_key(Path(args.key))
    cap = payment_of(args.max_payment, args.currency)
    document = make_pact(
        key, args.with_did, now_ms=wall_clock_ms(), ttl_ms=int(args.days * DAY_MS),
        kinds=_listed(args.kinds), data_classes=_listed(args.data_class),
        max_payment_minor=0 if cap is None else cap.minor_units,
        currency=None if cap is None else cap.currency, monitoring=args.monitoring,
    )  # fmt: skip
    write_json(args.out, document)
    if args.json:
        print_json({"document": document})
        return 0
    print(args.out)
    say(f"wrote pact {document['id']} proposed to {args.with_did} to {args.out}")
    say(f"next: the recipient countersigns it: trust-broker pact countersign --key THEIR_KEY "
        f"{args.out} --out pact-signed.json --present --agent-url THEIR_URL")  # fmt: skip
    return 0


async def cmd_pact_countersign(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Check a proposed pact names this key as its recipient, then countersign it."""
    from broker.core.agreements import PACT_TYPE
    from broker.core.signing import countersign, signed_by

    key = load_key(Path(args.key))
    proposal = read_json(args.file, "pact")
    if not isinstance(proposal, dict) or proposal.get("type") != PACT_TYPE:
        raise ConfigError(f"{args.file} is not a pact (type {PACT_TYPE})")
    if proposal.get("recipient") != key.did:
        raise ConfigError(f"{args.file} is a pact with {proposal.get('recipient')}, not {key.did}")
    if not signed_by(proposal, str(proposal.get("sender"))):
        raise ConfigError(f"{args.file} is not signed by its sender {proposal.get('sender')}")
    document = countersign(key, proposal, "recipient_signature")
    return await _written(args, config, document, f"agreed with {proposal['sender']}")


async def cmd_vouch(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Vouch for another agent: lend it a share of this agent's earned reputation."""
    from broker.core.agreements import make_vouch

    public_key_from_did(args.for_did)
    key = load_key(Path(args.key))
    document = make_vouch(
        key, args.for_did, share=args.share, now_ms=wall_clock_ms(), ttl_ms=int(args.days * DAY_MS)
    )
    note = (
        f"lends {args.for_did} up to {args.share:g} of your earned reputation, and costs you "
        "when it misbehaves"
    )
    return await _written(args, config, document, note)


async def cmd_rotate(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Hand this agent's history over to a new key (signed by both keys)."""
    from broker.core.agreements import make_rotation

    old, new = load_key(Path(args.key)), load_key(Path(args.new_key))
    document = make_rotation(old, new, now_ms=wall_clock_ms())
    note = (
        f"hands {old.did}'s history to {new.did} once presented; ops provisions the new key "
        "(trust-broker provision) so it can log in"
    )
    return await _written(args, config, document, note)


def _listed(values: list[str] | None) -> list[str]:
    """Repeatable flags that also take comma-separated lists."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def _document_flags(parser: argparse.ArgumentParser, out: str, *, days: bool = True) -> None:
    parser.add_argument("--out", default=out, help=f"file to write (default {out})")
    parser.add_argument("--present", action="store_true", help="also present it to the broker")
    if days:
        parser.add_argument("--days", type=float, default=30.0, help="validity in days")


def add_commands(sub: Any) -> None:
    """Register manifest, pact, vouch and rotate on the trust-broker parser."""
    p = command(
        sub, "manifest",
        summary="sign a capability manifest (what the agent sends and accepts)",
        description="Write a capability manifest signed by --key: the kinds it sends, what "
        "it accepts, how long it keeps what it receives. Presented, it can only make the "
        "agent's recipient profile stricter; it is self-declared, so it never raises a score.",
        examples=["trust-broker manifest --key bob.key --kinds data,response --retention "
                  "ephemeral --out bob-manifest.json --present --agent-url \"$BOB_URL\""],
    )  # fmt: skip
    connection_flags(p)
    _document_flags(p, "manifest.json")
    p.add_argument("--kinds", action="append", required=True, help="kinds it sends (a,b or repeat)")
    p.add_argument("--retention", required=True, choices=["ephemeral", "temporary", "permanent"])
    p.add_argument("--accept-kind", action="append", help="kind it accepts (repeatable)")
    p.add_argument("--accept-class", action="append", help="data class it accepts (repeatable)")
    p.add_argument("--reversibility", default="none", choices=["full", "partial", "none"])
    p.add_argument("--rate-limit", type=int, default=600, help="messages per minute it sends")
    p.add_argument("--may-delegate", action="store_true", help="it may delegate work")
    p.set_defaults(handler=cmd_manifest)

    pact = command(
        sub, "pact",
        summary="propose or countersign a pact between a sender and a recipient",
        description="A pact says what a sender may send a recipient, for how long, and what "
        "the flight recorder may keep. The sender proposes (signs) it, the recipient "
        "countersigns it, and either presents it.",
        examples=["trust-broker pact propose --key alice.key --with \"$BOB\" --kinds data",
                  "trust-broker pact countersign --key bob.key pact.json --present "
                  "--agent-url \"$BOB_URL\""],
    )  # fmt: skip
    actions = pact.add_subparsers(dest="pact_command", required=True, metavar="ACTION")
    p = command(
        actions, "propose",
        summary="sign a pact proposal to a recipient",
        description="Write a pact signed by --key (the sender) for messages to --with.",
        examples=["trust-broker pact propose --key alice.key --with \"$BOB\" --kinds data,payment "
                  "--max-payment 100 --currency USD --out pact.json"],
    )  # fmt: skip
    connection_flags(p, key_help="the sender's key file")
    p.add_argument("--with", dest="with_did", required=True, help="the recipient's DID")
    p.add_argument("--kinds", action="append", required=True, help="kinds allowed (a,b or repeat)")
    p.add_argument("--data-class", action="append", help="data classes allowed (repeatable)")
    p.add_argument("--max-payment", help="largest payment allowed, e.g. 100 (default none)")
    p.add_argument("--currency", default="USD", help="currency of --max-payment")
    p.add_argument("--monitoring", default="metadata", choices=["full", "metadata", "hashes"],
                   help="what the flight recorder may keep of the content")  # fmt: skip
    p.add_argument("--out", default="pact.json", help="file to write (default pact.json)")
    p.add_argument("--days", type=float, default=30.0, help="validity in days (default 30)")
    p.set_defaults(handler=cmd_pact_propose)

    p = command(
        actions, "countersign",
        summary="countersign a pact proposed to you",
        description="Check that FILE is a pact to --key's DID signed by its sender, add the "
        "recipient's signature and write it to --out.",
        examples=["trust-broker pact countersign --key bob.key pact.json --out pact-signed.json "
                  "--present --agent-url \"$BOB_URL\""],
    )  # fmt: skip
    connection_flags(p, key_help="the recipient's key file")
    p.add_argument("file", help="the proposed pact")
    _document_flags(p, "pact-signed.json", days=False)
    p.set_defaults(handler=cmd_pact_countersign)

    p = command(
        sub, "vouch",
        summary="vouch for another agent",
        description="Write a vouch signed by --key: it lends --for a bounded share of this "
        "agent's earned reputation and costs this agent when --for misbehaves.",
        examples=["trust-broker vouch --key carol.key --for \"$ALICE\" --share 0.2 --present "
                  "--agent-url \"$CAROL_URL\""],
    )  # fmt: skip
    connection_flags(p, key_help="the voucher's key file")
    _document_flags(p, "vouch.json")
    p.add_argument("--for", dest="for_did", required=True, help="the DID vouched for")
    p.add_argument("--share", type=float, required=True, help="share of your reputation, (0, 1]")
    p.set_defaults(handler=cmd_vouch)

    p = command(
        sub, "rotate",
        summary="hand an agent's history over to a new key",
        description="Write a key rotation signed by the old key (--key) and the new one "
        "(--new-key, from keygen). Presented, the new key carries the old one's history; "
        "ops then provisions the new key.",
        examples=["trust-broker keygen --out alice2.key",
                  "trust-broker rotate --key alice.key --new-key alice2.key --present "
                  "--agent-url \"$ALICE_URL\""],
    )  # fmt: skip
    connection_flags(p, key_help="the old key file")
    p.add_argument("--new-key", required=True, help="the new key file")
    _document_flags(p, "rotation.json", days=False)
    p.set_defaults(handler=cmd_rotate)
