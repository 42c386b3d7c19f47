"""Security's commands on the blocked stream: read it (tail, follow, show) and decide blocks
(release, confirm)."""

from __future__ import annotations

import argparse
import base64
import contextlib
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from broker.amqp.streams import Offset
from broker.cli.review import T, decision_flags, report, reviewer_of
from broker.cli.support import command, print_json, score
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.envelope import decode_envelope, signature_valid
from broker.core.records import UNPARSEABLE, BlockedFilter, Record, StreamEntry, iso_ms
from broker.errors import ConfigError, EnvelopeError
from broker.ops.reading import start_offset
from broker.reasons import BLOCK_REASONS, known, nearest

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
    close = nearest(reason, BLOCK_REASONS)
    hint = f"did you mean {close}? " if close else ""
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
    reason = known(row["reason"])
    if reason is not None:
        lines.append(f"    why: {reason.explanation}")
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


def _envelope_view(record: Record, *, with_body: bool) -> dict[str, Any]:
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

    reviewer = reviewer_of(args)
    store = open_store(config)
    try:
        review = await release_blocked(
            config, store, args.trace_id, reviewer, args.why, wall_clock_ms(),
            offset=_at_offset(args),
        )  # fmt: skip
    finally:
        await store.close()
    return report(args, review, f"released {review['message_id']} to {review['recipient']}")


async def cmd_blocked_confirm(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Confirm a block; --penalise also counts it as a verified failure of the sender."""
    from broker.app import open_store
    from broker.ops.blocked import confirm_blocked

    reviewer = reviewer_of(args)
    store = open_store(config)
    try:
        review = await confirm_blocked(
            config, store, args.trace_id, reviewer, args.why, wall_clock_ms(),
            penalise=args.penalise, offset=_at_offset(args),
        )  # fmt: skip
    finally:
        await store.close()
    penalised = f"; failure recorded for {review['penalised']}" if review.get("penalised") else ""
    return report(args, review, f"confirmed block {review['trace_id']}{penalised}")


def add_commands(sub: Any, *, default_reviewer: str | None = None) -> None:
    """Register `blocked` on the trust-broker parser; decisions are attributed to
    `default_reviewer` unless --reviewer says otherwise."""
    _add_blocked(sub)
    sub.choices["blocked"].set_defaults(default_reviewer=default_reviewer)


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
    decision_flags(a, why=True)
    a.add_argument("--offset", help=OFFSET_HELP)
    a.set_defaults(handler=cmd_blocked_release)

    a = command(
        actions, "confirm",
        summary="confirm a block was right",
        description="Record that the block was right. --penalise also counts it as a "
        "verified failure of the sender (only if the signature proves who sent it).",
        examples=[f"trust-broker blocked confirm {T} --penalise --why \"prompt injection\""],
    )  # fmt: skip
    decision_flags(a, why=True)
    a.add_argument("--penalise", action="store_true", help="record a failure for the sender")
    a.add_argument("--offset", help=OFFSET_HELP)
    a.set_defaults(handler=cmd_blocked_confirm)
