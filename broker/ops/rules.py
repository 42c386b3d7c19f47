"""What a review may do, decided in pure code before anything is taken or published: the
request itself, the record's bytes (signed by its sender, unexpired), which blocks may be
released or counted against their sender, and the decision a record was written with."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import replace
from typing import Any

from broker.core.decision import Action, Decision, Tier
from broker.core.envelope import DecodedEnvelope, Envelope, decode_envelope, signature_valid
from broker.core.policy import Policy
from broker.core.records import UNPARSEABLE, Record, iso_ms
from broker.core.scoring import decide
from broker.core.state import TrustContext
from broker.errors import EnvelopeError, ReviewError
from broker.reasons import Reason

# Blocked records no reviewer may release, and why (broker/reasons.py).
UNRELEASABLE: dict[str, str] = {
    r: r.info.not_releasable for r in Reason if r.info.not_releasable is not None
}
# Blocked records that say nothing about their sender's conduct.
UNPENALISABLE: dict[str, str] = {
    r: r.info.not_penalisable for r in Reason if r.info.not_penalisable is not None
}
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def check_request(trace_id: str, reviewer: str, why: str, *, why_required: bool = True) -> None:
    """Refuse a review action that does not say on what, by whom and (usually) why."""
    if not _TRACE_ID.fullmatch(trace_id):
        raise ReviewError(f"{trace_id!r} is not a trace id (32 hex characters)", code="bad_request")
    if not reviewer.strip() or len(reviewer) > 64 or not reviewer.isprintable():
        raise ReviewError(
            "a reviewer name (1-64 printable characters) is required", code="no_reviewer"
        )
    if (why_required and not why.strip()) or len(why) > 1000:
        raise ReviewError(
            "say why (--why, 1-1000 characters): it is kept on record", code="no_reason"
        )


def authentic_envelope(record: Record, max_bytes: int) -> tuple[bytes, DecodedEnvelope]:
    """The bytes to deliver (the RFC 8785 form of the record's original bytes, exactly as
    verified) and their envelope, if and only if its sender signed them."""
    if UNPARSEABLE in record:
        raise ReviewError(
            f"this entry is not a record a router wrote ({record['unparseable']}); nothing "
            "vouches for its bytes, so it is never delivered",
            code=UNPARSEABLE,
        )
    try:
        raw = base64.b64decode(record["raw_b64"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise ReviewError("the record keeps no original bytes", code="no_envelope") from None
    try:
        decoded = decode_envelope(raw, max_bytes)
    except EnvelopeError as exc:
        raise ReviewError(
            f"the original bytes are not an envelope: {exc}", code="no_envelope"
        ) from None
    if not signature_valid(decoded):
        raise ReviewError(
            "the original bytes fail signature verification against the sender's did:key: "
            "they are not what the sender signed",
            code="bad_signature",
        )
    env = decoded.envelope
    if (record.get("message_id"), record.get("sender"), record.get("recipient")) != (
        env.id, env.sender, env.recipient,
    ):  # fmt: skip
        raise ReviewError("the record does not match its own signed bytes", code="record_mismatch")
    return decoded.wire or raw, decoded


def check_unexpired(env: Envelope, now_ms: int) -> None:
    """Refuse to deliver what its sender said must not arrive after expires_at."""
    if env.expires_at is not None and env.expires_at <= now_ms:
        raise ReviewError(
            f"the envelope expired at {iso_ms(env.expires_at)}; its sender withdrew it",
            code="expired",
        )


def recorded_decision(record: Record) -> Decision:
    """The Decision a blocked or escalation record was written with."""
    data = record["decision"]
    tier = data.get("tier")
    return Decision(
        action=Action(data["action"]),
        tier=Tier(tier) if tier is not None and tier in Tier._value2member_map_ else Tier.BLOCKED,
        composite=data.get("composite"),
        dimensions=dict(data.get("dimensions") or {}),
        weakest=data.get("weakest"),
        reasons=tuple(data.get("reasons") or ()),
        remediation=str(data.get("remediation") or ""),
        policy_version=int(data.get("policy_version") or 0),
        gate=data.get("gate"),
        identity_verified=data.get("identity_verified") is True,
        payment_hold=data.get("payment_hold") is True,
    )


def rescore_decision(
    decoded: DecodedEnvelope,
    ctx: TrustContext,
    policy: Policy,
    received_ms: int,
    now_ms: int,
) -> Decision:
    """Decide a held escalation again with the sender's standing at `now_ms`.

    The clock-skew gate judged created_at against the time of receipt, and the message has
    waited in the queue since; the allowance grows by that wait so the gate still means
    what it meant then. Expiry, revocation, recipient and privacy are judged as of now.
    The signature was verified by the caller (authentic_envelope)."""
    waited = max(0, now_ms - received_ms)
    gates = policy.gates.model_copy(
        update={"max_clock_skew_ms": policy.gates.max_clock_skew_ms + waited}
    )
    return decide(
        decoded, ctx, policy.model_copy(update={"gates": gates}), now_ms, signature_ok=True
    )


def is_expired(record: Record, now_ms: int, older_than_ms: int) -> bool:
    """True when an escalation has waited more than `older_than_ms` (or has no time)."""
    received = record.get("received_ms")
    return not isinstance(received, int) or now_ms - received > older_than_ms


def describe_review(review: dict[str, Any]) -> str:
    """One line saying who decided what on a trace, and when."""
    state = "" if review.get("state") == "done" else " (in progress or interrupted: unconfirmed)"
    return (
        f"{review.get('action')} by {review.get('reviewer')} at {iso_ms(int(review['at']))}"
        f"{state}: {review.get('why')}"
    )


def overridden(decision: Decision, reason: str) -> Decision:
    """A blocked or escalated decision turned into a delivery by `reason`."""
    return replace(decision, action=Action.DELIVER, reasons=(str(reason), *decision.reasons))


def set_aside(decision: Decision, reason: str, remediation: str) -> Decision:
    """An escalated decision ended on the blocked stream for `reason`."""
    return replace(
        decision, action=Action.BLOCK, reasons=(str(reason), *decision.reasons),
        remediation=remediation,
    )


def claim_record(
    record: Record, trace_id: str, action: str, reviewer: str, why: str, now_ms: int
) -> dict[str, Any]:
    """The review record a decision claims before it takes effect (state pending)."""
    return {
        "trace_id": trace_id,
        "action": action,
        "reviewer": reviewer,
        "why": why,
        "at": now_ms,
        "state": "pending",
        "token": uuid.uuid4().hex,
        "message_id": record.get("message_id"),
        "sender": record.get("sender"),
        "recipient": record.get("recipient"),
        "reason": record.get("reason"),
    }
