"""Security's commands: read the blocked stream, decide blocks and escalations.

Every decision needs a reviewer name (--reviewer, else TRUST_REVIEWER, else the OS
account, which cli.py passes in) and a reason (--why); both are kept on record.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from broker.cli_support import command, person, print_json, say, score
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.envelope import decode_envelope, signature_valid
from broker.errors import ConfigError, EnvelopeError
from broker.ops.reading import start_offset
from broker.records import BLOCK_REASONS, UNPARSEABLE, BlockedFilter, StreamEntry, iso_ms
from broker.streams import Offset

# `escalations rescore` exits with this when the escalation stays pending.
STILL_PENDING = 3
REVIEWER_HELP = "who decides, kept on record (default TRUST_REVIEWER, else the OS account)"
OFFSET_HELP = "stream offset to start searching at (default: seek by the trace id's time)"
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def parse_time(text: str, flag: str) -> int:
    """ISO-8601 time as Unix milliseconds; a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag}: {text!r} is not an ISO-8601 time, e.g. 2025-06-15T15:06:40Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _filter(args: argparse.Namespace) -> BlockedFilter:
    return BlockedFilter(
        sender=args.sender,
        recipient=args.recipient,
        reason=_known_reason(args.reason),
        since_ms=None if args.since is None else parse_time(args.since, "--since"),
        until_ms=None if args.until is None else parse_time(args.until, "--until"),
    )


def _known_reason(reason: str | None) -> str | None:
    """--reason, refused (with the nearest code) unless records can carry it."""
    if reason is None or reason in BLOCK_REASONS:
        return reason
    import difflib

    close = difflib.get_close_matches(reason, BLOCK_REASONS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(
        f"--reason {reason!r} is no reason code a blocked record carries; {hint}"
        f"known: {', '.join(BLOCK_REASONS)}"
    )


def _row(entry: StreamEntry) -> dict[str, Any]:
    return {"offset": entry.offset, **{k: v for k, v in entry.record.items() if k != "raw_b64"}}


def _line(row: dict[str, Any]) -> str:
    """A record in a few lines: DIDs and remediation in full, so they can be pasted."""
    at = row.get("received_ms")
    when = iso_ms(at) if isinstance(at, int) else "(time unknown)"
    decision = row.get("decision") or {}
    lines = [f"{when}  #{row['offset']}  {row['reason']}  trace {row['trace_id']}"]
    if row.get(UNPARSEABLE):
        lines.append(f"    unparseable: {row[UNPARSEABLE]}")
    else:
        lines.append(f"    from {row.get('sender') or '?'}")
        lines.append(f"    to   {row.get('recipient') or '?'}")
        lines.append(
            f"    message {row.get('message_id')}  composite {score(decision.get('composite'))}"
            f"  tier {decision.get('tier')}"
        )
    lines.append(f"    remediation: {decision.get('remediation') or '-'}")
    return "\n".join(lines)


def _at_offset(args: argparse.Namespace) -> Offset | None:
    """Where to start looking for one record: --offset if given, else None (seek)."""
    return None if args.offset is None else start_offset(args.offset, None)


def _reviewer(args: argparse.Namespace) -> str:
    return person(args.reviewer, args.default_reviewer, "--reviewer")


# -- blocked ---------------------------------------------------------------------------------


async def cmd_blocked_tail(args: argparse.Namespace, config: BrokerConfig) -> int:
    """The newest --limit matching records; with --offset, the first --limit from there."""
    from broker.ops.reading import page_blocked, tail_blocked

    wanted = _filter(args)
    continue_at = None
    if args.offset is not None:
        offset = start_offset(args.offset, None)
        entries, continue_at = await page_blocked(config, wanted, offset=offset, limit=args.limit)
    else:
        entries = await tail_blocked(config, wanted, limit=args.limit)
    rows = [_row(entry) for entry in entries]
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        print(_line(row))
    where = f" at offsets {rows[0]['offset']}-{rows[-1]['offset']}" if rows else ""
    more = f"; more from --offset {continue_at}" if continue_at is not None else ""
    print(f"{len(rows)} record(s){where}{more}", file=sys.stderr)
    return 0


async def cmd_blocked_follow(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Print matching records as they arrive, until Ctrl-C (or --count records)."""
    from broker.ops.reading import stream_blocked

    wanted = _filter(args)
    offset = start_offset(args.offset, wanted.since_ms)
    seen = 0
    stream = stream_blocked(config, offset=offset, idle_timeout=None, prefetch=100)
    async with contextlib.aclosing(stream) as records:
        async for entry in records:
            if not wanted.matches(entry.record):
                continue
            row = _row(entry)
            print(orjson.dumps(row).decode() if args.json else _line(row), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


async def cmd_blocked_show(args: argparse.Namespace, config: BrokerConfig) -> int:
    """One record with its full explanation, its envelope and what reviewers did with it."""
    from broker.app import open_store
    from broker.ops.find import find_blocked

    store = open_store(config)
    try:
        trace_id = args.trace_id
        if not _TRACE_ID.fullmatch(trace_id):
            # A message id: the flight recorder knows its trace for a week.
            trace_id = await store.trace_id_of(trace_id) or trace_id
        entry = await find_blocked(config, trace_id, offset=_at_offset(args), index=store)
        if entry is None:
            raise ConfigError(f"no blocked record {args.trace_id} on the stream")
        review = await store.review(trace_id)
        history = await store.review_log(trace_id)
    finally:
        await store.close()
    shown = {
        **_row(entry),
        "envelope": _envelope_view(entry.record, with_body=args.body),
        "review": review,
        "review_log": history,
    }
    if args.json:
        print_json(shown)
    else:
        _print_explanation(shown)
    return 0


def _envelope_view(record: dict[str, Any], *, with_body: bool) -> dict[str, Any]:
    raw = base64.b64decode(record.get("raw_b64") or "")
    try:
        decoded = decode_envelope(raw, max(len(raw), 1))
    except EnvelopeError as exc:
        return {"valid": False, "error": str(exc), "bytes": len(raw)}
    env = decoded.envelope
    view = env.model_dump(mode="json", exclude={"body", "signature"}, exclude_none=True)
    view.update(valid=True, signature_valid=signature_valid(decoded), bytes=len(raw))
    if with_body:
        view["body"] = env.body
    return view


def _print_explanation(shown: dict[str, Any]) -> None:
    decision = shown["decision"]
    at = shown.get("received_ms")
    print(f"trace        {shown['trace_id']}  (stream offset {shown['offset']})")
    print(f"received     {iso_ms(at) if isinstance(at, int) else 'unknown'}")
    print(f"reason       {shown['reason']}  (gate: {decision.get('gate') or 'none'})")
    score = decision.get("composite")
    print(
        f"decision     {decision['action']}  tier {decision['tier']}  "
        f"composite {'-' if score is None else f'{score:.4f}'}  "
        f"policy v{decision.get('policy_version')}"
    )
    for name, value in (decision.get("dimensions") or {}).items():
        weakest = "  <- weakest" if name == decision.get("weakest") else ""
        print(f"  {name:<11} {value:5.3f} {'#' * round(value * 20):<20}{weakest}")
    print(f"reasons      {', '.join(decision.get('reasons') or [])}")
    print(f"remediation  {decision.get('remediation')}")
    _print_envelope(shown["envelope"])
    review = shown["review"]
    print(f"review       {_describe(review) if review else 'not reviewed'}")
    for item in shown["review_log"]:
        print(
            f"  {iso_ms(int(item['at']))} {item['action']} by {item['reviewer']}: "
            f"{item['outcome']} {item.get('message', '')}".rstrip()
        )


def _print_envelope(view: dict[str, Any]) -> None:
    if not view.get("valid"):
        print(f"envelope     not an envelope ({view.get('error')}), {view['bytes']} bytes")
        return
    signature = "valid" if view["signature_valid"] else "INVALID (not what the sender signed)"
    print(f"envelope     {view['id']} ({view['kind']}, {view['bytes']} bytes)")
    print(f"  from       {view['sender']}")
    print(f"  to         {view['recipient']}")
    print(f"  created    {iso_ms(view['created_at'])}")
    for name in ("expires_at", "payment", "data_classes"):
        if view.get(name):
            value = iso_ms(view[name]) if name == "expires_at" else view[name]
            print(f"  {name:<10} {value}")
    print(f"  signature  {signature}")
    if "body" in view:
        print(f"  body       {orjson.dumps(view['body']).decode()}")
    else:
        print("  body       (hidden: it may be sensitive; --body shows it)")


def _describe(review: dict[str, Any]) -> str:
    from broker.ops.rules import describe_review

    return describe_review(review)


async def cmd_blocked_release(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Deliver a blocked message a reviewer judged a false positive (at most once)."""
    from broker.app import open_store
    from broker.ops.blocked import release_blocked

    reviewer = _reviewer(args)
    store = open_store(config)
    try:
        review = await release_blocked(
            config, store, args.trace_id, reviewer, args.why, wall_clock_ms(),
            offset=_at_offset(args),
        )  # fmt: skip
    finally:
        await store.close()
    return _report(args, review, f"released {review['message_id']} to {review['recipient']}")


async def cmd_blocked_confirm(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Confirm a block; --penalise also counts it as a verified failure of the sender."""
    from broker.app import open_store
    from broker.ops.blocked import confirm_blocked

    reviewer = _reviewer(args)
    store = open_store(config)
    try:
        review = await confirm_blocked(
            config, store, args.trace_id, reviewer, args.why, wall_clock_ms(),
            penalise=args.penalise, offset=_at_offset(args),
        )  # fmt: skip
    finally:
        await store.close()
    penalised = f"; failure recorded for {review['penalised']}" if review.get("penalised") else ""
    return _report(args, review, f"confirmed block {review['trace_id']}{penalised}")


def _report(args: argparse.Namespace, review: dict[str, Any], text: str) -> int:
    if args.json:
        print_json(review)
    else:
        print(f"{text} (by {review['reviewer']}: {review['why']})")
    return 0


# -- escalations -------------------------------------------------------------------------------


async def cmd_escalations_list(args: argparse.Namespace, config: BrokerConfig) -> int:
    """List pending escalations (left in the queue) with their explanation."""
    from broker.app import open_store
    from broker.ops.reading import read_escalations

    records = await read_escalations(config, limit=args.limit)
    store = open_store(config)
    try:
        awaiting = await store.awaiting_evidence()
    finally:
        await store.close()
    rows = [
        {
            **{k: v for k, v in record.items() if k != "raw_b64"},
            "awaiting_evidence": awaiting.get(str(record.get("trace_id"))),
        }
        for record in records
    ]
    if args.json:
        print_json(rows)
        return 0
    now = wall_clock_ms()
    for row in rows:
        _print_escalation(row, now)
    say(f"{len(rows)} pending escalation(s)")
    return 0


def _print_escalation(row: dict[str, Any], now: int) -> None:
    decision = row.get("decision") or {}
    at = row.get("received_ms")
    age = f"waiting {(now - at) // 1000} s" if isinstance(at, int) else "time unknown"
    print(f"{row['trace_id']}  {row['reason']}  {age}")
    if row.get(UNPARSEABLE):
        print(f"    unparseable: {row[UNPARSEABLE]}")
    else:
        print(f"    from {row.get('sender')}")
        print(f"    to   {row.get('recipient')}")
        print(
            f"    message {row.get('message_id')}  composite {score(decision.get('composite'))}"
            f"  tier {decision.get('tier')}"
        )
        print(
            f"    reasons {', '.join(decision.get('reasons') or [])}; "
            f"weakest {decision.get('weakest')}"
        )
    print(f"    remediation: {decision.get('remediation') or '-'}")
    request = row.get("awaiting_evidence")
    if request:
        since = iso_ms(int(request["requested_at"]))
        print(
            f"    evidence requested from the sender at {since} by {request.get('reviewer')}"
            f" ({request.get('why') or 'no reason given'}); re-scored on every sweep"
        )


async def cmd_escalations_decide(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Approve (deliver) or reject (block, failure recorded) one escalation."""
    from broker.app import open_store
    from broker.ops.escalations import approve_escalation, reject_escalation

    reviewer = _reviewer(args)
    decide = approve_escalation if args.escalation_command == "approve" else reject_escalation
    store = open_store(config)
    try:
        review = await decide(config, store, args.trace_id, reviewer, args.why, wall_clock_ms())
    finally:
        await store.close()
    verb = "approved" if args.escalation_command == "approve" else "rejected"
    return _report(args, review, f"{verb} {review['message_id']} from {review['sender']}")


async def cmd_escalations_request_evidence(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Ask the sender for more evidence; the escalation is re-scored on every sweep."""
    from broker.app import open_store
    from broker.ops.escalations import request_evidence
    from broker.sdk.keyfile import load_key

    reviewer = _reviewer(args)
    try:
        broker_key = load_key(Path(config.broker_key_file))
    except ConfigError as exc:
        raise ConfigError(f"the request is signed with the broker's own key: {exc}") from None
    store = open_store(config)
    try:
        request = await request_evidence(
            config, store, broker_key, args.trace_id, reviewer, args.why, wall_clock_ms()
        )
    finally:
        await store.close()
    if args.json:
        print_json({"request_id": request.id, "sent_to": request.recipient, "body": request.body})
    else:
        print(f"asked {request.recipient} for more evidence (request {request.id})")
    return 0


async def cmd_escalations_rescore(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Decide one escalation again with the sender's current standing."""
    from broker.app import open_store
    from broker.ops.escalations import rescore_escalation

    reviewer = _reviewer(args)
    store = open_store(config)
    try:
        result = await rescore_escalation(
            config, store, args.trace_id, wall_clock_ms(), reviewer=reviewer
        )
    finally:
        await store.close()
    decision = result.decision
    if args.json:
        print_json(
            {"trace_id": result.trace_id, "delivered": result.delivered,
             "decision": decision.to_dict(), "review": result.review}
        )  # fmt: skip
    elif result.delivered:
        print(f"delivered: {', '.join(decision.reasons)} (score {decision.composite})")
    else:
        print(
            f"still pending: now {decision.action.value} ({', '.join(decision.reasons)}); "
            f"{decision.remediation}"
        )
    return 0 if result.delivered else STILL_PENDING


async def cmd_escalations_expire(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Move escalations older than the limit to the blocked stream now."""
    from broker.app import open_store
    from broker.ops.escalations import expire_escalations

    reviewer = _reviewer(args)
    older_than_ms = None if args.older_than is None else int(args.older_than * 1000)
    store = open_store(config)
    try:
        expired = await expire_escalations(
            config, store, wall_clock_ms(), older_than_ms, reviewer=reviewer
        )
    finally:
        await store.close()
    if args.json:
        print_json(expired)
    else:
        for review in expired:
            print(f"expired {review['trace_id']} (message {review['message_id']})")
        print(f"{len(expired)} escalation(s) expired", file=sys.stderr)
    return 0


# -- parser ----------------------------------------------------------------------------------


def add_review_commands(sub: Any, *, default_reviewer: str | None = None) -> None:
    """Register `blocked` and `escalations` on the trust-broker parser; decisions are
    attributed to `default_reviewer` unless --reviewer says otherwise."""
    _add_blocked(sub)
    _add_escalations(sub)
    sub.choices["blocked"].set_defaults(default_reviewer=default_reviewer)
    sub.choices["escalations"].set_defaults(default_reviewer=default_reviewer)


def _filter_flags(parser: argparse.ArgumentParser, *, inherited: bool) -> None:
    # `inherited`: the bare `blocked` command takes these flags too (so `blocked --reason X`
    # keeps working); on its subcommands an absent flag must not hide the parent's value.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if inherited else value

    parser.add_argument(
        "--offset",
        default=default(None),
        help="start at this stream offset (a number, first, last or next) and read forwards; "
        "without it, the newest records",
    )
    parser.add_argument("--since", default=default(None), help="ISO-8601 time (UTC without offset)")
    parser.add_argument("--until", default=default(None), help="ISO-8601 time (UTC without offset)")
    parser.add_argument("--reason", default=default(None), help="only this reason code")
    parser.add_argument("--sender", default=default(None), help="only this sender DID")
    parser.add_argument("--recipient", default=default(None), help="only this recipient DID")
    parser.add_argument("--json", action="store_true", default=default(False), help="JSON output")


def _decision_flags(parser: argparse.ArgumentParser, *, why: bool) -> None:
    parser.add_argument("trace_id", help="trace id of the record (32 hex characters)")
    parser.add_argument("--reviewer", help=REVIEWER_HELP)
    if why:
        parser.add_argument("--why", required=True, help="why: kept on record with the decision")
    parser.add_argument("--json", action="store_true", help="print the review record as JSON")


T = "01a2335440847160be5e665f909ae659"  # a trace id, in the examples


def _add_blocked(sub: Any) -> None:
    p = command(
        sub, "blocked",
        summary="read the blocked-message stream; release or confirm a block",
        description="Read trust.blocked (a stream: reading never removes anything) and "
        "decide blocks. Without an action: the same as `blocked tail`. Entries that are not "
        "records a router wrote are shown as `unparseable`, with their bytes kept.",
        examples=["trust-broker blocked", "trust-broker blocked tail --reason bad_signature",
                  f"trust-broker blocked show {T}",
                  f"trust-broker blocked release {T} --why \"partner onboarding\""],
    )  # fmt: skip
    _filter_flags(p, inherited=False)
    p.add_argument("--limit", type=int, default=50, help="records to print (default 50)")
    p.set_defaults(handler=cmd_blocked_tail)
    actions = p.add_subparsers(dest="blocked_command", metavar="ACTION")

    a = command(
        actions, "tail",
        summary="the newest --limit matching records, or a page from --offset",
        description="The newest --limit records matching the filters (read backwards from "
        "the end, no further back than --since). With --offset N: the first --limit matching "
        "records from offset N on, and the offset to continue from.",
        examples=["trust-broker blocked tail --limit 20",
                  "trust-broker blocked tail --reason insufficient_trust --since "
                  "2026-11-23T08:00:00",
                  "trust-broker blocked tail --offset 50000 --limit 100 --json"],
    )  # fmt: skip
    _filter_flags(a, inherited=True)
    a.add_argument("--limit", type=int, default=argparse.SUPPRESS, help="records to print")
    a.set_defaults(handler=cmd_blocked_tail)

    a = command(
        actions, "follow",
        summary="print matching records as they arrive, until Ctrl-C",
        description="Print records matching the filters as they arrive (from --offset, "
        "default next, or --since), until Ctrl-C or --count records.",
        examples=["trust-broker blocked follow --sender \"$ALICE\"",
                  "trust-broker blocked follow --offset first --count 10 --json"],
    )  # fmt: skip
    _filter_flags(a, inherited=True)
    a.add_argument("--count", type=int, default=0, help="stop after N records (0 = never)")
    a.set_defaults(handler=cmd_blocked_follow, offset="next")

    a = command(
        actions, "show",
        summary="one record with its full explanation",
        description="One record: decision, dimension scores, reasons, remediation, the "
        "envelope decoded from its original bytes (signature checked), and its reviews. The "
        "record is found by seeking (its trace id carries its time), not by reading the "
        "stream from the start.",
        examples=[f"trust-broker blocked show {T}", f"trust-broker blocked show {T} --body --json"],
    )  # fmt: skip
    a.add_argument("trace_id", help="trace id (or message id, while its trace is kept)")
    a.add_argument("--body", action="store_true", help="also print the body (may be sensitive)")
    a.add_argument("--offset", help=OFFSET_HELP)
    a.add_argument("--json", action="store_true", help="machine-readable JSON output")
    a.set_defaults(handler=cmd_blocked_show)

    a = command(
        actions, "release",
        summary="deliver a false positive to its recipient (at most once)",
        description="Deliver the original bytes to the recipient after verifying their "
        "signature again. Refused for replays, revoked senders, expired envelopes, "
        "unparseable entries, records whose bytes are not what the sender signed, and "
        "anything already decided.",
        examples=[f"trust-broker blocked release {T} --why \"false positive: partner onboarding\""],
    )  # fmt: skip
    _decision_flags(a, why=True)
    a.add_argument("--offset", help=OFFSET_HELP)
    a.set_defaults(handler=cmd_blocked_release)

    a = command(
        actions, "confirm",
        summary="confirm a block was right",
        description="Record that the block was right. --penalise also counts it as a "
        "verified failure of the sender (only if the signature proves who sent it).",
        examples=[f"trust-broker blocked confirm {T} --penalise --why \"prompt injection\""],
    )  # fmt: skip
    _decision_flags(a, why=True)
    a.add_argument("--penalise", action="store_true", help="record a failure for the sender")
    a.add_argument("--offset", help=OFFSET_HELP)
    a.set_defaults(handler=cmd_blocked_confirm)


def _add_escalations(sub: Any) -> None:
    p = command(
        sub, "escalations",
        summary="list and decide messages waiting for a human",
        description="Escalated messages wait in trust.escalations until approved, rejected "
        "or expired (policy escalations.expire_after_ms). Without an action: list them, "
        "with their remediation and whether evidence was requested.",
        examples=["trust-broker escalations", f"trust-broker escalations approve {T} --why "
                  "\"invoice 4411 checked\""],
    )  # fmt: skip
    p.add_argument("--limit", type=int, default=50, help="escalations to list (default 50)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    p.set_defaults(handler=cmd_escalations_list)
    actions = p.add_subparsers(dest="escalation_command", metavar="ACTION")

    a = command(
        actions, "list",
        summary="pending escalations with their explanation",
        description="Every pending escalation, oldest first, read without taking it off the "
        "queue: sender, recipient, amount, score, reasons, remediation, evidence requests.",
        examples=["trust-broker escalations list --json"],
    )  # fmt: skip
    a.add_argument("--limit", type=int, default=argparse.SUPPRESS, help="escalations to list")
    a.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    a.set_defaults(handler=cmd_escalations_list)

    for name, summary, description, why in (
        ("approve", "deliver it to its recipient (at most once)",
         "Take the escalation off the queue and deliver its original bytes (signature "
         "verified again) in one transaction.", "invoice 4411 checked"),
        ("reject", "block it and record a failure for the sender",
         "Move it to the blocked stream as escalation_rejected and count a verified failure "
         "of its sender.", "unknown payee"),
        ("request-evidence", "ask the sender for more evidence",
         "Send the sender a broker-signed request (kind request, body type "
         "trust-broker/evidence-request) naming the message and --why, which the sender "
         "reads with `trust-broker receive`. The escalation is re-scored on every sweep "
         "until decided.", "need a bond for this amount"),
    ):  # fmt: skip
        a = command(actions, name, summary=summary, description=description,
                    examples=[f"trust-broker escalations {name} {T} --why \"{why}\""])  # fmt: skip
        _decision_flags(a, why=True)
        handler = cmd_escalations_request_evidence if name == "request-evidence" else None
        a.set_defaults(handler=handler or cmd_escalations_decide)

    a = command(
        actions, "rescore",
        summary="decide it again with the sender's current standing",
        description=f"Deliver it if the decision now says deliver; else it stays pending "
        f"and the exit status is {STILL_PENDING}.",
        examples=[f"trust-broker escalations rescore {T}"],
    )  # fmt: skip
    _decision_flags(a, why=False)
    a.set_defaults(handler=cmd_escalations_rescore)

    a = command(
        actions, "expire",
        summary="move escalations older than the limit to the blocked stream now",
        description="What the routers' sweeper does on its own: escalations older than "
        "--older-than seconds (default: the policy's escalations.expire_after_ms) move to "
        "the blocked stream as escalation_expired.",
        examples=["trust-broker escalations expire --older-than 3600"],
    )  # fmt: skip
    a.add_argument("--older-than", type=float, help="seconds")
    a.add_argument("--reviewer", help=REVIEWER_HELP)
    a.add_argument("--json", action="store_true", help="machine-readable JSON output")
    a.set_defaults(handler=cmd_escalations_expire)
