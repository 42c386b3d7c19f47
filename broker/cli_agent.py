"""What an agent does, from the command line: everything the SDK (broker/sdk/) does.

Commands that talk to the broker take the agent's --key and its own --agent-url (the
URL `provision` printed) and go over AMQP through the SDK, exactly as a program would.
Commands that only sign a document (manifest, pact, vouch, rotate) write it to --out,
and with --present also hand it to the broker. After each step the broker's view of
the agent is printed: composite, tier, the weakest dimension and the next step.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from broker.cli_support import command, json_flag, print_json, say, score, standing_lines
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.envelope import MESSAGE_KINDS, PaymentIntent
from broker.errors import ConfigError, EvidenceError, TrustBrokerError
from broker.identity import AgentKey, public_key_from_did
from broker.sdk.client import AgentClient
from broker.sdk.keyfile import load_key, save_key
from broker.sdk.received import Received

DAY_MS = 86_400_000
AGENT_URL_HELP = (
    "the agent's own AMQP URL, as `trust-broker provision` printed it (env TRUST_AGENT_URL)"
)


# -- helpers --------------------------------------------------------------------------------


def agent_url(args: argparse.Namespace, config: BrokerConfig) -> str:
    """--agent-url, else TRUST_AGENT_URL, else the router's URL (which an agent lacks)."""
    return str(args.agent_url or os.environ.get("TRUST_AGENT_URL") or config.amqp_vhost_url)


@asynccontextmanager
async def connected(args: argparse.Namespace, config: BrokerConfig) -> AsyncIterator[AgentClient]:
    """The agent's SDK client, connected with its own login."""
    async with AgentClient(load_key(Path(args.key)), agent_url(args, config)) as client:
        yield client


def read_json(path: str, what: str) -> Any:
    """A JSON file, or a one-line error naming it."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not JSON: {exc}") from None


def write_json(path: str, document: dict[str, Any]) -> None:
    """Write a signed document (public: it holds no secret)."""
    Path(path).write_text(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def payment_of(amount: str | None, currency: str) -> PaymentIntent | None:
    """A payment intent from --amount/--currency, or a one-line error naming the flag."""
    if amount is None:
        return None
    from pydantic import ValidationError

    try:
        return PaymentIntent(currency=currency, amount=amount)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"--amount {amount!r} --currency {currency!r}: {problem} (e.g. --amount 12.50)"
        ) from None


async def show_standing(
    client: AgentClient, args: argparse.Namespace, *, kind: str = "data",
    payment: PaymentIntent | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """Ask the broker where this agent stands now and print it; None when it cannot say
    (no router answering, or not the agent's own login)."""
    try:
        view = await client.standing(kind=kind, payment=payment)
    except (TrustBrokerError, TimeoutError) as exc:
        code = f" ({exc.code})" if isinstance(exc, EvidenceError) else ""
        say(f"(standing unavailable{code}: {exc or 'no answer'})")
        return None
    if not args.json:
        for line in standing_lines(view, key=args.key):
            say(line)
    return view


# -- keys and messages ----------------------------------------------------------------------


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


# -- negotiation ----------------------------------------------------------------------------


async def cmd_handshake(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Prove to the broker that this agent holds its key (signed challenge)."""
    from broker.records import iso_ms

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


async def present(
    client: AgentClient, args: argparse.Namespace, documents: list[Any], names: list[str]
) -> dict[str, Any]:
    """Present `documents` through the SDK and say what became of each."""
    reply = await client.present(*documents)
    refused = {item["index"]: item for item in reply.get("refused") or []}
    if not args.json:
        for index, name in enumerate(names):
            document = documents[index] if isinstance(documents[index], dict) else {}
            kind = document.get("type", "document")
            # A W3C credential's type is a list; its last entry is the specific one.
            kind = kind[-1] if isinstance(kind, list) and kind else kind
            what = str(kind).removeprefix("trust-broker/")
            if index in refused:
                item = refused[index]
                say(f"refused {what} {name}: {item['message']} ({item['code']})")
            else:
                say(f"accepted {what} {document.get('id', '')} from {name}")
    return reply


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


# -- documents an agent signs ----------------------------------------------------------------


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
    from broker.agreements import make_manifest

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
    from broker.agreements import make_pact

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
    from broker.agreements import PACT_TYPE
    from broker.signing import countersign, signed_by

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
    from broker.agreements import make_vouch

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
    from broker.agreements import make_rotation

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


# -- parser ---------------------------------------------------------------------------------


def _connection_flags(
    parser: argparse.ArgumentParser, *, key_help: str = "the agent's key file"
) -> None:
    parser.add_argument("--key", required=True, help=key_help)
    parser.add_argument("--agent-url", help=AGENT_URL_HELP)
    json_flag(parser)


def _document_flags(parser: argparse.ArgumentParser, out: str, *, days: bool = True) -> None:
    parser.add_argument("--out", default=out, help=f"file to write (default {out})")
    parser.add_argument("--present", action="store_true", help="also present it to the broker")
    if days:
        parser.add_argument("--days", type=float, default=30.0, help="validity in days")


def add_commands(sub: Any) -> None:
    """Register the agent's commands on the trust-broker parser."""
    _add_messaging(sub)
    _add_negotiation(sub)
    _add_documents(sub)


def _add_messaging(sub: Any) -> None:
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
    _connection_flags(p, key_help="sender key file (from keygen)")
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
    _connection_flags(p, key_help="recipient key file")
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
    _connection_flags(p, key_help="the recipient's key file")
    p.add_argument("--message-id", required=True, help="id of the message you received")
    p.add_argument("--sender", required=True, help="DID of the agent that sent it")
    p.add_argument("--outcome", required=True,
                   choices=["success", "failure", "policy_violation", "hallucination"])  # fmt: skip
    p.add_argument("--severity", choices=["low", "medium", "high", "critical"],
                   help="how bad (for anything but success)")  # fmt: skip
    p.set_defaults(handler=cmd_report)


def _add_negotiation(sub: Any) -> None:
    p = command(
        sub, "handshake",
        summary="prove to the broker that the agent holds its key",
        description="Answer the broker's signed challenge with the agent's key, which "
        "proves possession of it for a session (an hour by default); the broker's reply is "
        "checked too. --expected-broker pins the broker's DID.",
        examples=["trust-broker handshake --key alice.key --agent-url \"$ALICE_URL\""],
    )  # fmt: skip
    _connection_flags(p)
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
    _connection_flags(p)
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
    _connection_flags(p)
    p.add_argument("--kind", default="data", choices=sorted(MESSAGE_KINDS), help="message kind")
    p.add_argument("--amount", help="judge a payment of this amount")
    p.add_argument("--currency", default="USD", help="its currency (default USD)")
    p.set_defaults(handler=cmd_standing)


def _add_documents(sub: Any) -> None:
    p = command(
        sub, "manifest",
        summary="sign a capability manifest (what the agent sends and accepts)",
        description="Write a capability manifest signed by --key: the kinds it sends, what "
        "it accepts, how long it keeps what it receives. Presented, it can only make the "
        "agent's recipient profile stricter; it is self-declared, so it never raises a score.",
        examples=["trust-broker manifest --key bob.key --kinds data,response --retention "
                  "ephemeral --out bob-manifest.json --present --agent-url \"$BOB_URL\""],
    )  # fmt: skip
    _connection_flags(p)
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
    _connection_flags(p, key_help="the sender's key file")
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
    _connection_flags(p, key_help="the recipient's key file")
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
    _connection_flags(p, key_help="the voucher's key file")
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
    _connection_flags(p, key_help="the old key file")
    p.add_argument("--new-key", required=True, help="the new key file")
    _document_flags(p, "rotation.json", days=False)
    p.set_defaults(handler=cmd_rotate)
