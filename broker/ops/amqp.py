"""The blocked stream and the escalation queue as the operations read them: RabbitMQ's
errors become ReviewError, and every stream message becomes a record (broker/core/records.py),
a delivery no agent queue was bound for included."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson

from broker.amqp.errors import CHANNEL_ERRORS, ChannelNotFoundEntity
from broker.amqp.streams import ReadStats, StreamMessage, StreamReader
from broker.config import BrokerConfig
from broker.core.records import Record, StreamEntry, entry_trace_id, header_text, parse_record
from broker.errors import ExceptionMapping, MapExceptions, ReviewError, map_exceptions
from broker.reasons import Reason

# Seeking by time has a resolution of a second (an AMQP timestamp); this much earlier
# also covers NTP-synchronised clocks of routers and RabbitMQ. Clocks further apart only
# cost a read of the part before the seek (broker/ops/find.py).
SEEK_SLACK_MS = 1_000


def _not_found(exc: Exception) -> Exception:
    error = ReviewError(
        f"{exc.args[0] if exc.args else exc} (is the vhost right, and has a router started there?)",
        code="not_found",
    )
    error.__suppress_context__ = True  # the message says it all
    return error


def _unavailable(exc: Exception) -> Exception:
    return ReviewError(f"RabbitMQ unavailable: {exc!r}", code="amqp_unavailable")


# RabbitMQ's errors as ReviewError: they never leave broker/ops. A missing queue first
# (it is an AMQPError too), then whatever a failing channel or connection raises.
TO_REVIEW_ERROR: ExceptionMapping = {
    ChannelNotFoundEntity: _not_found,
    **{kind: _unavailable for kind in CHANNEL_ERRORS},
}
_TO_REVIEW = map_exceptions(TO_REVIEW_ERROR)


def amqp_errors() -> MapExceptions:
    """RabbitMQ's errors in the block as ReviewError (not_found, amqp_unavailable)."""
    return _TO_REVIEW


def seek_at(ms: int) -> datetime:
    """The stream offset of a time in Unix milliseconds (a second's resolution)."""
    return datetime.fromtimestamp(max(ms, 0) // 1000, tz=UTC)


@contextlib.asynccontextmanager
async def blocked_reader(
    config: BrokerConfig, prefetch: int = 1000, stats: ReadStats | None = None
) -> AsyncIterator[StreamReader]:
    """A reader of the blocked stream; RabbitMQ's errors in the block become ReviewError."""
    with amqp_errors():
        async with StreamReader(
            config.amqp_vhost_urls, config.topology.blocked_stream, prefetch=prefetch, stats=stats
        ) as reader:
            yield reader


def entry_of(message: StreamMessage) -> StreamEntry:
    """A stream message as the record it carries, with its offset."""
    headers = message.headers
    if header_text(headers.get("x-trust-action")) == "deliver":
        # A delivery no agent queue was bound for, rerouted here by trust.deliver's
        # alternate exchange: the envelope itself, with the decision in its headers.
        return StreamEntry(message.offset, _undeliverable_record(message))
    return StreamEntry(message.offset, parse_record(message.body, headers))


def trace_of(message: StreamMessage) -> str:
    """The trace id a stream message is labelled with (its header, else its record)."""
    return entry_trace_id(message.headers, message.body)


def _undeliverable_record(message: StreamMessage) -> Record:
    headers = message.headers
    try:
        envelope = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        envelope = {}
    if not isinstance(envelope, dict):
        envelope = {}
    listed = header_text(headers.get("x-trust-reasons")).split(",")
    reasons = [Reason.UNDELIVERABLE, *filter(None, listed)]
    return {
        "trace_id": trace_of(message),
        "received_ms": None,
        "message_id": envelope.get("id") or message.message_id,
        "sender": envelope.get("sender"),
        "recipient": envelope.get("recipient"),
        "kind": envelope.get("kind"),
        "reason": Reason.UNDELIVERABLE,
        "error_field": None,
        "decision": {
            "action": "block", "tier": header_text(headers.get("x-trust-tier")),
            "composite": _number(header_text(headers.get("x-trust-score"))),
            "dimensions": _dimensions(header_text(headers.get("x-trust-dimensions"))),
            "weakest": None, "reasons": reasons,
            "remediation": "the recipient is registered but no queue is bound for it; "
            "re-provision the agent",
            "policy_version": headers.get("x-trust-policy-version"), "gate": Reason.UNDELIVERABLE,
        },
        "raw_b64": base64.b64encode(message.body).decode("ascii"),
    }  # fmt: skip


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _dimensions(text: str) -> dict[str, float]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float)}
