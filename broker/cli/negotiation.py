"""An agent's negotiation with the broker from the command line: handshake, present, and
its own standing."""

from __future__ import annotations

import argparse
from typing import Any

from broker.cli.agent import connected, connection_flags, present, show_standing
from broker.cli.support import command, payment_of, print_json, read_json, say, standing_lines
from broker.config import BrokerConfig
from broker.core.envelope import MESSAGE_KINDS


async def cmd_handshake(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Prove to the broker that this agent holds its key (signed challenge)."""
    from broker.core.records import iso_ms

    async with connected(args, config) as client:
        proof = await client.handshake(expected_broker=args.expected_broker, resume=args.resume)
        if not args.json:
            minutes = (proof.expires_ms - proof.verified_ms) // 60_000
            say(
                f"proved: the broker recorded that you hold the key of {proof.agent}, until "
                f"{iso_ms(proof.expires_ms)} ({minutes} min; run handshake again before then)"
            )
        view = await show_standing(client, args)
    if args.json:
        print_json({"agent": proof.agent, "verified_ms": proof.verified_ms,
                    "expires_ms": proof.expires_ms, "standing": view})  # fmt: skip
    return 0


async def cmd_present(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Hand signed documents to the broker, which verifies and records each."""
    documents = [read_json(path, "document") for path in args.files]
    async with connected(args, config) as client:
        reply = await present(client, args, documents, args.files)
        view = await show_standing(client, args)
    if args.json:
        print_json({**{k: reply.get(k) for k in ("accepted", "refused")}, "standing": view})
    return 0 if not reply.get("refused") else 1


async def cmd_standing(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Where this agent stands with the broker now, and what to do next."""
    payment = payment_of(args.amount, args.currency)
    kind = "payment" if payment is not None else args.kind
    async with connected(args, config) as client:
        view = await client.standing(kind=kind, payment=payment)
    if args.json:
        print_json(view)
    else:
        print(f"standing of {view['did']}")
        for line in standing_lines(view, key=args.key):
            print(line)
    return 0


def add_commands(sub: Any) -> None:
    """Register handshake, present and standing on the trust-broker parser."""
    p = command(
        sub, "handshake",
        summary="prove to the broker that the agent holds its key",
        description="Answer the broker's signed challenge with the agent's key, which "
        "proves possession of it for a session (an hour by default); the broker's reply is "
        "checked too. --expected-broker pins the broker's DID.",
        examples=["trust-broker handshake --key alice.key --agent-url \"$ALICE_URL\""],
    )  # fmt: skip
    connection_flags(p)
    p.add_argument("--expected-broker", help="refuse a broker with another DID")
    p.add_argument("--resume", action="store_true", help="confirm a live session, no new challenge")
    p.set_defaults(handler=cmd_handshake)

    p = command(
        sub, "present",
        summary="hand signed documents (credential, bond, pact...) to the broker",
        description="Present signed documents: issuer-signed credentials, attestations and "
        "bonds; the agent's own manifest; pacts signed by both parties; vouches; key "
        "rotations. The broker verifies each and records what it accepts. Exit status 1 "
        "when it refused any.",
        examples=["trust-broker present --key alice.key --agent-url \"$ALICE_URL\" "
                  "alice-credential.json",
                  "trust-broker present --key alice.key --agent-url \"$ALICE_URL\" bond.json "
                  "pact.json"],
    )  # fmt: skip
    connection_flags(p)
    p.add_argument("files", nargs="+", metavar="FILE", help="signed JSON documents")
    p.set_defaults(handler=cmd_present)

    p = command(
        sub, "standing",
        summary="where the agent stands with the broker, and what to do next",
        description="Ask the broker for this agent's own standing: composite, tier, every "
        "dimension with its reasons, what the router would do with a message of --kind (or "
        "a payment of --amount) from it now, the weakest dimension and the next step. The "
        "broker tells it only to the agent itself (its own login).",
        examples=["trust-broker standing --key alice.key --agent-url \"$ALICE_URL\"",
                  "trust-broker standing --key alice.key --agent-url \"$ALICE_URL\" "
                  "--amount 20 --currency USD"],
    )  # fmt: skip
    connection_flags(p)
    p.add_argument("--kind", default="data", choices=sorted(MESSAGE_KINDS), help="message kind")
    p.add_argument("--amount", help="judge a payment of this amount")
    p.add_argument("--currency", default="USD", help="its currency (default USD)")
    p.set_defaults(handler=cmd_standing)
