"""An agent's keys and messages from the command line: keygen, send, receive, report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from broker.cli.agent import connected, connection_flags, show_standing
from broker.cli.support import command, json_flag, payment_of, print_json, say, score
from broker.config import BrokerConfig
from broker.core.envelope import MESSAGE_KINDS
from broker.core.identity import AgentKey, public_key_from_did
from broker.errors import ConfigError
from broker.sdk.keyfile import save_key
from broker.sdk.received import Received


async def cmd_keygen(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Create a key file and print its DID."""
    key = AgentKey.generate()
    save_key(Path(args.out), key, overwrite=args.force)
    if args.json:
        print_json({"did": key.did, "key_file": args.out})
        return 0
    print(key.did)
    say(f"wrote a new Ed25519 key to {args.out} (mode 0600; the private key is never printed)")
    say(f"next: ops gives it an AMQP login and a queue: trust-broker provision {key.did}")
    return 0


async def cmd_send(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Sign and publish one message; say what the router does with it at this standing."""
    public_key_from_did(args.to)
    try:
        body = orjson.loads(args.body)
    except orjson.JSONDecodeError as exc:
        example = '--body \'{"task": "summarise"}\''
        raise ConfigError(f"--body is not JSON ({exc}); e.g. {example}") from None
    payment = payment_of(args.amount, args.currency)
    kind = "payment" if payment is not None and args.kind == "data" else args.kind
    async with connected(args, config) as client:
        envelope = await client.send(
            args.to, body, kind=kind, payment=payment, data_classes=tuple(args.label),
            ttl_ms=None if args.ttl is None else int(args.ttl * 1000),
        )  # fmt: skip
        view = None
        if not args.quiet:
            if not args.json:
                say(f"sent {kind} message {envelope.id} to {args.to} (confirmed by RabbitMQ)")
            view = await show_standing(client, args, kind=kind, payment=payment)
    if args.json:
        print_json({"id": envelope.id, "standing": view})
    else:
        print(envelope.id)
    return 0


async def cmd_receive(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Print delivered messages with the router's decision on each."""
    count = 0
    async with connected(args, config) as client:
        async for received in client.messages(timeout=args.timeout):
            row = received_row(received)
            if args.json:
                print(orjson.dumps(row).decode(), flush=True)
            else:
                print("\n".join(received_lines(row)), flush=True)
            count += 1
            if args.count and count >= args.count:
                break
    if count == 0 and not args.json:
        say(
            f"no messages in {args.timeout:g} s. A message from a peer below probation is "
            "blocked, not delivered: its sender sees why with `trust-broker standing`, "
            "security with `trust-broker blocked tail`"
        )
    return 0


def received_row(received: Received) -> dict[str, Any]:
    """A delivered message and the decision that let it through."""
    env, trust = received.envelope, received.trust
    return {
        "id": env.id, "from": env.sender, "kind": env.kind, "body": env.body,
        "payment": None if env.payment is None else env.payment.model_dump(exclude_none=True),
        "action": trust.action, "score": trust.score, "tier": trust.tier,
        "dimensions": trust.dimensions, "reasons": list(trust.reasons),
        "weakest": trust.weakest or None, "remediation": trust.remediation or None,
        "policy_version": trust.policy_version, "trace_id": trust.trace_id,
        "from_broker": trust.from_broker or None,
    }  # fmt: skip


def received_lines(row: dict[str, Any]) -> list[str]:
    """A delivered message for a person."""
    body = orjson.dumps(row["body"]).decode()
    if row["from_broker"]:
        about = row["body"] if isinstance(row["body"], dict) else {}
        return [
            f"request {row['id']} from the broker ({row['from']})",
            f"  about your message {about.get('message_id')} (trace {about.get('trace_id')}): "
            f"{about.get('reason') or 'more evidence is needed'}",
            f"  remediation: {about.get('remediation') or '-'}",
        ]
    payment = row["payment"]
    paid = f", {payment['amount']} {payment['currency']}" if payment else ""
    dimensions = "  ".join(f"{name} {score(value)}" for name, value in row["dimensions"].items())
    return [
        f"message {row['id']} from {row['from']} ({row['kind']}{paid})",
        f"  composite {score(row['score'])}  tier {row['tier']}  policy v{row['policy_version']}"
        f"  trace {row['trace_id']}",
        f"  {dimensions}",
        f"  reasons: {', '.join(row['reasons'])}",
        f"  weakest: {row['weakest'] or '-'}"
        + (f": {row['remediation']}" if row["remediation"] not in (None, "none needed") else ""),
        f"  body {body[:200]}{'…' if len(body) > 200 else ''}",
    ]


async def cmd_report(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Report the outcome of a message this agent received (once, signed)."""
    public_key_from_did(args.sender)
    async with connected(args, config) as client:
        sent = await client.report_message(
            args.sender, args.message_id, args.outcome, severity=args.severity
        )
    if args.json:
        print_json({"id": sent.id, "about": args.message_id, "outcome": args.outcome})
    else:
        print(sent.id)
        say(
            f"reported {args.outcome} on message {args.message_id} from {args.sender}: the "
            "router applies it once, weighted by your own trust, if you received that message"
        )
    return 0


def add_commands(sub: Any) -> None:
    """Register keygen, send, receive and report on the trust-broker parser."""
    p = command(
        sub, "keygen",
        summary="create an agent key file and print its DID",
        description="Create a new Ed25519 key, write it to a 0600 file and print its did:key, "
        "the agent's identity. The private key is never printed.",
        examples=["ALICE=$(trust-broker keygen --out alice.key)"],
    )  # fmt: skip
    p.add_argument("--out", required=True, help="key file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    json_flag(p)
    p.set_defaults(handler=cmd_keygen)

    p = command(
        sub, "send",
        summary="sign and publish one message",
        description="Sign an envelope with --key and publish it to the agent's own ingress "
        "lane (trust.in.DID; trust.ingress with another login); print its id once RabbitMQ "
        "confirmed it. Then ask the "
        "broker where the agent stands and say what the router does with such a message "
        "(delivered, blocked or escalated) and what to do next (--quiet: not that).",
        examples=[
            "trust-broker send --key alice.key --agent-url \"$ALICE_URL\" --to \"$BOB\" "
            "--body '{\"task\": \"summarise\"}'",
            "trust-broker send --key alice.key --agent-url \"$ALICE_URL\" --to \"$BOB\" "
            "--amount 20 --currency USD --body '{\"invoice\": 4411}'",
        ],
    )  # fmt: skip
    connection_flags(p, key_help="sender key file (from keygen)")
    p.add_argument("--to", required=True, help="recipient DID")
    p.add_argument("--kind", default="data", choices=sorted(MESSAGE_KINDS),
                   help="message kind (default data; payment when --amount is given)")  # fmt: skip
    p.add_argument("--body", default="{}", help="JSON body (default {})")
    p.add_argument("--amount", help="payment amount as a decimal string, e.g. 12.50")
    p.add_argument("--currency", default="USD", help="ISO 4217 currency (default USD)")
    p.add_argument("--label", action="append", default=[], help="data class label, repeatable")
    p.add_argument("--ttl", type=float, help="seconds until the message expires")
    p.add_argument("--quiet", action="store_true", help="do not ask the broker for standing")
    p.set_defaults(handler=cmd_send)

    p = command(
        sub, "receive",
        summary="print messages delivered to an agent",
        description="Consume the agent's own queue and print each message with the "
        "router's decision: composite, tier, every dimension, the reasons, the weakest "
        "dimension and its remediation. Requests the broker itself sends (e.g. for more "
        "evidence) are shown as such.",
        examples=["trust-broker receive --key bob.key --agent-url \"$BOB_URL\"",
                  "trust-broker receive --key bob.key --agent-url \"$BOB_URL\" --count 1 --json"],
    )  # fmt: skip
    connection_flags(p, key_help="recipient key file")
    p.add_argument("--count", type=int, default=0, help="stop after N messages (0 = no limit)")
    p.add_argument("--timeout", type=float, default=5.0, help="stop after S idle seconds")
    p.set_defaults(handler=cmd_receive)

    p = command(
        sub, "report",
        summary="report the outcome of a message you received",
        description="Tell the broker how a delivered message turned out. Only its recipient "
        "may report, once; the report moves the sender's reputation, weighted by the "
        "reporter's own trust.",
        examples=["trust-broker report --key bob.key --agent-url \"$BOB_URL\" --message-id ID "
                  "--sender \"$ALICE\" --outcome success"],
    )  # fmt: skip
    connection_flags(p, key_help="the recipient's key file")
    p.add_argument("--message-id", required=True, help="id of the message you received")
    p.add_argument("--sender", required=True, help="DID of the agent that sent it")
    p.add_argument("--outcome", required=True,
                   choices=["success", "failure", "policy_violation", "hallucination"])  # fmt: skip
    p.add_argument("--severity", choices=["low", "medium", "high", "critical"],
                   help="how bad (for anything but success)")  # fmt: skip
    p.set_defaults(handler=cmd_report)
