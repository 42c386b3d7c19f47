"""Hard gates: conditions that block a message whatever its score, each with its own code."""

from __future__ import annotations

from broker.core.envelope import Envelope
from broker.core.policy import RETENTION_ORDER, Policy
from broker.core.privacy import detect_data_classes
from broker.core.scoring.compliance import pact_covers
from broker.core.state import TrustContext
from broker.reasons import Reason


def first_failed_gate(
    env: Envelope, signature_ok: bool, ctx: TrustContext, policy: Policy, now_ms: int
) -> tuple[Reason, str] | None:
    """Return (reason code, explanation) for the first gate the message fails, else None."""
    if not signature_ok:
        return Reason.BAD_SIGNATURE, "signature does not verify against the sender's did:key"
    if ctx.peer.revoked:
        return Reason.REVOKED_KEY, "the sender's key has been revoked"
    skew = policy.gates.max_clock_skew_ms
    if abs(now_ms - env.created_at) > skew:
        return (
            Reason.CLOCK_SKEW,
            f"created_at is more than {skew // 1000} s from the broker's clock",
        )
    if env.expires_at is not None and env.expires_at <= now_ms:
        return Reason.EXPIRED, "the envelope's expires_at has passed"
    if ctx.replayed:
        return Reason.REPLAY, "message id or nonce already seen within the replay window"
    if ctx.recipient is None:
        return Reason.UNKNOWN_RECIPIENT, "no agent is registered under the recipient DID"
    privacy = _privacy_problem(env, ctx, policy)
    if privacy is not None:
        return Reason.PRIVACY_VIOLATION, privacy
    if ctx.recipient.requires_pact and (ctx.pact is None or not pact_covers(ctx.pact, env, now_ms)):
        return Reason.PACT_VIOLATION, "the recipient requires an active pact covering this message"
    return None


def _privacy_problem(env: Envelope, ctx: TrustContext, policy: Policy) -> str | None:
    recipient = ctx.recipient
    assert recipient is not None
    retention = RETENTION_ORDER[recipient.retention]
    accepted = recipient.accepted_data_classes
    labels: tuple[str, ...] = env.data_classes
    unlabelled: frozenset[str] = frozenset()
    if accepted is not None or retention > _STRICTEST_LIMIT:
        # The sender's labels are not the last word: what the body shows counts too.
        # (An ephemeral recipient that accepts anything cannot be sent too much, so the
        # scan is skipped there.)
        unlabelled = detect_data_classes(env.body) - set(labels)
    for label in (*labels, *sorted(unlabelled)):
        named = f"'{label}'"
        if label in unlabelled:
            named += " (detected in the body, not labelled)"
        if accepted is not None and label not in accepted:
            return f"recipient does not accept data class {named}"
        limit = policy.gates.max_retention.get(label)
        if limit is not None and retention > RETENTION_ORDER[limit]:
            return (
                f"data class {named} may go only to {limit} retention; "
                f"recipient keeps data {recipient.retention}"
            )
    return None


# The most private retention any rule can demand: a recipient at this level, with no
# list of accepted classes, can receive every class.
_STRICTEST_LIMIT = min(RETENTION_ORDER.values())
