"""Reading what a client sends: query parameters, path parts and form fields, validated.

Client strings are only ever compared or shown as text; none becomes a file path."""

from __future__ import annotations

from starlette.datastructures import FormData, QueryParams

from broker.core.identity import public_key_from_did
from broker.core.recorder import check_trace_id
from broker.core.records import BlockedFilter
from broker.errors import ConfigError

MAX_LIMIT = 1000
HOUR_MS = 3_600_000
# The blocked page reads the stream from this far back unless told otherwise.
DEFAULT_HOURS = 24


def limit(query: QueryParams, default: int) -> int:
    """The `limit` parameter, clamped to 1..MAX_LIMIT."""
    return max(1, min(integer(query.get("limit"), default), MAX_LIMIT))


def integer(raw: str | None, default: int) -> int:
    """An integer parameter, or `default` when absent; refused when not a number."""
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{raw[:40]!r} is not a whole number") from None


def optional_integer(raw: str | None) -> int | None:
    """An integer parameter or None."""
    return None if raw is None or raw == "" else integer(raw, 0)


def blocked_filter(query: QueryParams, now_ms: int) -> BlockedFilter:
    """Sender, recipient and reason filters (empty means any), and the last `hours` hours
    (default 24; 0 for the whole stream, which is read from its start)."""
    hours = integer(query.get("hours"), DEFAULT_HOURS)
    return BlockedFilter(
        sender=query.get("sender") or None,
        recipient=query.get("recipient") or None,
        reason=query.get("reason") or None,
        since_ms=now_ms - hours * HOUR_MS if hours > 0 else None,
    )


def did(raw: str) -> str:
    """A did:key from a path, refused unless it decodes to an Ed25519 key."""
    public_key_from_did(raw)
    return raw


def trace(raw: str) -> str:
    """A trace id from a path (32 lowercase hex characters)."""
    return check_trace_id(raw)


def text(form: FormData, name: str, max_chars: int = 1000) -> str:
    """A text field of a form ('' when absent), refused when longer than `max_chars`."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    if len(value) > max_chars:
        raise ConfigError(f"{name} is longer than {max_chars} characters")
    return value
