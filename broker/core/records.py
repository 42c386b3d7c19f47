"""Records on the blocked stream and the escalation queue, as readers see them (pure).

Anything can end up on those queues: a router of another version, an operator's test
publish, a half-written tool. A reader must show such an entry for what it is, never
crash on it, so every record goes through `parse_record`: what a router writes comes out
unchanged, anything else comes out as an `unparseable` record that keeps its bytes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, cast

import orjson

from broker.core.decision import DecisionRecord
from broker.core.envelope import decode_envelope
from broker.core.recorder import TRACE_ID
from broker.errors import EnvelopeError
from broker.reasons import Reason

UNPARSEABLE = Reason.UNPARSEABLE
_ACTIONS = ("deliver", "block", "escalate")


class Record(TypedDict, total=False):
    """A record on the blocked stream or the escalation queue: what a router writes
    (broker/router/outbound.py outcome_record), what `parse_record` returns. Reviews add
    their own fields; a record of another version may carry more (they are kept)."""

    trace_id: str
    received_ms: int | None
    message_id: str | None
    sender: str | None
    recipient: str | None
    kind: str | None
    reason: str
    error_field: str | None
    decision: DecisionRecord
    raw_b64: str
    # Set only on an entry no router wrote: what is wrong with it.
    unparseable: str


@dataclass(frozen=True)
class StreamEntry:
    """One record of the blocked stream with its stream offset."""

    offset: int
    record: Record

    @property
    def unparseable(self) -> bool:
        """True when the entry is not a record a router or reviewer wrote."""
        return UNPARSEABLE in self.record


def header_text(value: Any) -> str:
    """An AMQP header value as text ('' when absent)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def entry_trace_id(headers: Mapping[str, Any], body: bytes) -> str:
    """The trace id of a queued entry: the x-trust-trace-id header routers and reviewers
    set (no need to parse the body), else the body's own trace_id, else (an entry that
    says nothing) the first 32 hex of its SHA-256, which is at least stable. Message ids
    say nothing here: aio-pika gives every message a random one."""
    header = header_text(headers.get("x-trust-trace-id"))
    if TRACE_ID.fullmatch(header):
        return header
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError:
        record = None
    if isinstance(record, dict) and TRACE_ID.fullmatch(str(record.get("trace_id"))):
        return str(record["trace_id"])
    return hashlib.sha256(body).hexdigest()[:32]


def parse_record(body: bytes, headers: Mapping[str, Any]) -> Record:
    """The record in `body`, or an `unparseable` record that says what is wrong with it
    and keeps its bytes in raw_b64."""
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError:
        return unparseable_record(body, headers, "it is not JSON")
    if not isinstance(record, dict):
        return unparseable_record(body, headers, "it is not a JSON object")
    problem = record_problem(record)
    if problem is not None:
        return unparseable_record(body, headers, problem)
    return cast(Record, record)  # checked by record_problem


def record_problem(record: dict[str, Any]) -> str | None:
    """What makes `record` unlike the records routers write, or None."""
    if not isinstance(record.get("trace_id"), str) or not TRACE_ID.fullmatch(record["trace_id"]):
        return "it has no trace_id of 32 hex characters"
    if not isinstance(record.get("reason"), str):
        return "it has no reason code"
    if not isinstance(record.get("raw_b64"), str):
        return "it does not keep the original bytes (raw_b64)"
    received = record.get("received_ms")
    if received is not None and (not isinstance(received, int) or isinstance(received, bool)):
        return "received_ms is not a time in milliseconds"
    return _decision_problem(record.get("decision"))


def _decision_problem(decision: Any) -> str | None:
    if not isinstance(decision, dict):
        return "it has no decision"
    if decision.get("action") not in _ACTIONS:
        return "its decision has no action"
    reasons = decision.get("reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        return "its decision's reasons are not a list of codes"
    dimensions = decision.get("dimensions") or {}
    if not isinstance(dimensions, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in dimensions.values()
    ):
        return "its dimension scores are not numbers"
    composite = decision.get("composite")
    if composite is not None and (
        not isinstance(composite, int | float) or isinstance(composite, bool)
    ):
        return "its composite is not a number"
    return None


def unparseable_record(body: bytes, headers: Mapping[str, Any], problem: str) -> Record:
    """A record for an entry no router wrote: shown and kept, never released or approved."""
    return {
        "trace_id": entry_trace_id(headers, body),
        "received_ms": None, "message_id": None, "sender": None, "recipient": None,
        "kind": None, "reason": UNPARSEABLE, "error_field": None,
        "decision": {
            "action": "block", "tier": "blocked", "composite": None, "dimensions": {},
            "weakest": None, "reasons": [UNPARSEABLE], "policy_version": None,
            "gate": UNPARSEABLE,
            "remediation": f"not a record a router writes ({problem}); its {len(body)} "
            "bytes are kept as they arrived, in raw_b64",
        },
        "raw_b64": base64.b64encode(body).decode("ascii"),
        "unparseable": problem,
    }  # fmt: skip


@dataclass(frozen=True)
class BlockedFilter:
    """Which blocked records a reviewer wants; None matches anything."""

    sender: str | None = None
    recipient: str | None = None
    reason: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, record: Record) -> bool:
        """True when `record` passes every filter that is set."""
        for wanted, value in (
            (self.sender, record.get("sender")), (self.recipient, record.get("recipient")),
            (self.reason, record.get("reason")),
        ):  # fmt: skip
            if wanted is not None and value != wanted:
                return False
        if self.since_ms is None and self.until_ms is None:
            return True
        at = record_time_ms(record)
        if at is None:
            return False
        return (self.since_ms is None or at >= self.since_ms) and (
            self.until_ms is None or at <= self.until_ms
        )

    @property
    def empty(self) -> bool:
        """True when it matches every record."""
        return self == BlockedFilter()


def record_time_ms(record: Record) -> int | None:
    """When the router received the message; for an undeliverable record (which has no
    receipt time) the envelope's own created_at, which the router held within its skew."""
    received = record.get("received_ms")
    if isinstance(received, int):
        return received
    try:
        created: int = decode_envelope(base64.b64decode(record["raw_b64"])).envelope.created_at
    except (EnvelopeError, KeyError, ValueError, TypeError):
        return None
    return created


def iso_ms(ms: int) -> str:
    """Unix milliseconds as an ISO-8601 UTC time, e.g. 2025-06-15T15:06:40.000Z."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
