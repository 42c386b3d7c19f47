"""The pure parts of reviewing: what may be delivered, re-scoring, expiry, filters, times."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from broker.cli.blocked import parse_time
from broker.core.decision import Action
from broker.core.envelope import encode_envelope
from broker.core.policy import Policy
from broker.core.records import BlockedFilter, Record, iso_ms, record_time_ms
from broker.core.scoring import decide
from broker.errors import ConfigError, ReviewError
from broker.ops.reading import start_offset
from broker.ops.rules import (
    authentic_envelope,
    check_request,
    check_unexpired,
    is_expired,
    recorded_decision,
    rescore_decision,
)
from broker.router import Outcome, outcome_record
from tests.unit.factories import (
    NOW,
    context,
    decoded,
    established_peer,
    new_peer,
    sign_envelope,
)

HOUR_MS = 3_600_000
TRACE = "0123456789abcdef" * 2


def record_of(envelope: Any = None, raw: bytes | None = None, **overrides: Any) -> Record:
    """A record as the router writes it, for `envelope` (or arbitrary `raw` bytes)."""
    envelope = envelope or sign_envelope()
    decision = decide(decoded(envelope), context(new_peer()), Policy(), NOW)
    outcome = Outcome(decision, TRACE, NOW, envelope)
    record = outcome_record(raw if raw is not None else encode_envelope(envelope), outcome)
    return cast(Record, {**record, **overrides})


def test_authentic_envelope_returns_the_exact_bytes_the_sender_signed() -> None:
    envelope = sign_envelope()
    raw, checked = authentic_envelope(record_of(envelope), 256 * 1024)
    assert raw == encode_envelope(envelope) and checked.envelope == envelope


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda r: {**r, "raw_b64": _b64(_raw(r).replace(b"summarise", b"wire-cash"))},
         "bad_signature"),
        (lambda r: {**r, "raw_b64": _b64(b'{"version": 1, "id": ')}, "no_envelope"),
        (lambda r: {**r, "raw_b64": "***"}, "no_envelope"),
        (lambda r: {k: v for k, v in r.items() if k != "raw_b64"}, "no_envelope"),
        (lambda r: {**r, "message_id": "another-id-123"}, "record_mismatch"),
        (lambda r: {**r, "recipient": r["sender"]}, "record_mismatch"),
    ],
    ids=["tampered", "malformed", "not-base64", "no-bytes", "other-id", "other-recipient"],
)  # fmt: skip
def test_authentic_envelope_refuses_anything_else(tamper: Any, code: str) -> None:
    with pytest.raises(ReviewError) as refused:
        authentic_envelope(tamper(record_of()), 256 * 1024)
    assert refused.value.code == code


def _raw(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record["raw_b64"])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_an_expired_envelope_is_never_delivered_late() -> None:
    envelope = sign_envelope(expires_at=NOW + 1000)
    check_unexpired(envelope, NOW + 999)
    with pytest.raises(ReviewError) as refused:
        check_unexpired(envelope, NOW + 1000)
    assert refused.value.code == "expired"


def test_a_record_keeps_its_decision() -> None:
    envelope = sign_envelope()
    decision = decide(decoded(envelope), context(established_peer()), Policy(), NOW)
    record = outcome_record(encode_envelope(envelope), Outcome(decision, TRACE, NOW, envelope))
    assert recorded_decision(record) == decision


@pytest.mark.parametrize(
    ("expires_in", "waited", "action", "reason"),
    [
        (None, 0, Action.DELIVER, "trust_sufficient"),
        # Hours in the queue: the skew gate judged created_at when the message arrived.
        (None, 2 * HOUR_MS, Action.DELIVER, "trust_sufficient"),
        (HOUR_MS, 2 * HOUR_MS, Action.BLOCK, "expired"),
    ],
)
def test_rescore_judges_skew_at_receipt_and_the_rest_now(
    expires_in: int | None, waited: int, action: Action, reason: str
) -> None:
    envelope = sign_envelope(expires_at=None if expires_in is None else NOW + expires_in)
    ctx = context(established_peer())
    decision = rescore_decision(decoded(envelope), ctx, Policy(), NOW, NOW + waited)
    assert (decision.action, decision.reasons[0]) == (action, reason)
    if waited:
        plain = decide(decoded(envelope), ctx, Policy(), NOW + waited)
        assert plain.reasons[0] in ("clock_skew", "expired")


@pytest.mark.parametrize(
    ("received", "now", "limit", "expired"),
    [
        (NOW, NOW + HOUR_MS, HOUR_MS, False),
        (NOW, NOW + HOUR_MS + 1, HOUR_MS, True),
        (NOW, NOW, 0, False),
        (None, NOW, HOUR_MS, True),
    ],
)
def test_escalation_expiry(received: int | None, now: int, limit: int, expired: bool) -> None:
    assert is_expired({"received_ms": received}, now, limit) is expired


@pytest.mark.parametrize(
    ("trace_id", "reviewer", "why", "code"),
    [
        ("not-a-trace", "rita", "ok", "bad_request"),
        (TRACE, "", "ok", "no_reviewer"),
        (TRACE, "   ", "ok", "no_reviewer"),
        (TRACE, "r" * 65, "ok", "no_reviewer"),
        (TRACE, "rita\n", "ok", "no_reviewer"),
        (TRACE, "rita", "", "no_reason"),
        (TRACE, "rita", "x" * 1001, "no_reason"),
    ],
)
def test_a_review_says_on_what_by_whom_and_why(
    trace_id: str, reviewer: str, why: str, code: str
) -> None:
    with pytest.raises(ReviewError) as refused:
        check_request(trace_id, reviewer, why)
    assert refused.value.code == code


SENDER_RECORD: Record = {"sender": "a", "recipient": "b", "reason": "replay", "received_ms": NOW}


@pytest.mark.parametrize(
    ("wanted", "matches"),
    [
        (BlockedFilter(), True),
        (BlockedFilter(sender="a", recipient="b", reason="replay"), True),
        (BlockedFilter(sender="b"), False),
        (BlockedFilter(recipient="a"), False),
        (BlockedFilter(reason="malformed"), False),
        (BlockedFilter(since_ms=NOW, until_ms=NOW), True),
        (BlockedFilter(since_ms=NOW + 1), False),
        (BlockedFilter(until_ms=NOW - 1), False),
    ],
)
def test_blocked_filters(wanted: BlockedFilter, matches: bool) -> None:
    assert wanted.matches(SENDER_RECORD) is matches


def test_an_undeliverable_record_is_dated_by_its_envelope() -> None:
    envelope = sign_envelope(created_at=NOW - 5)
    record: Record = {"received_ms": None, "raw_b64": _b64(encode_envelope(envelope))}
    assert record_time_ms(record) == NOW - 5
    assert record_time_ms({"received_ms": None, "raw_b64": _b64(b"junk")}) is None
    assert not BlockedFilter(since_ms=0).matches({"received_ms": None, "raw_b64": ""})


@pytest.mark.parametrize(
    ("offset", "since", "expected"),
    [
        ("first", None, "first"),
        ("next", None, "next"),
        ("42", None, 42),
        ("first", NOW, datetime.fromtimestamp(NOW // 1000, tz=UTC)),
    ],
)
def test_stream_offsets(offset: str, since: int | None, expected: Any) -> None:
    assert start_offset(offset, since) == expected


def test_a_bad_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        start_offset("yesterday", None)


@pytest.mark.parametrize(
    "text",
    ["2025-06-15T15:06:40Z", "2025-06-15T15:06:40+00:00", "2025-06-15T17:06:40+02:00",
     "2025-06-15T15:06:40"],
)  # fmt: skip
def test_times_are_iso_8601_and_utc_by_default(text: str) -> None:
    assert parse_time(text, "--since") == NOW
    assert iso_ms(NOW) == "2025-06-15T15:06:40.000Z"


def test_a_bad_time_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--until"):
        parse_time("last tuesday", "--until")
