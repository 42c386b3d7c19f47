"""Every reason the router gives for an action, in one place (pure).

A message's decision names one reason for what happened to it: the gate it failed, the
tier or cap that decided it, or what went wrong on the way. Each reason here says what
it means, what the sender (or ops) can do about it, and whether a reviewer may release
a message blocked for it or count the block against its sender. Readers show these
words; the review rules (broker/ops/rules.py) enforce the last two.

`Reason` is a str enum: a member is equal to its code, so records, headers and Redis
carry the plain code and old records read back unchanged.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """The code of the reason for a routing action."""

    # Hard gates, in the order they are checked (docs/SCORING.md section 1).
    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    BAD_SIGNATURE = "bad_signature"
    REVOKED_KEY = "revoked_key"
    CLOCK_SKEW = "clock_skew"
    EXPIRED = "expired"
    REPLAY = "replay"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    PRIVACY_VIOLATION = "privacy_violation"
    PACT_VIOLATION = "pact_violation"
    # Tiers.
    INSUFFICIENT_TRUST = "insufficient_trust"
    VERIFIED_IDENTITY_REQUIRED = "verified_identity_required"
    PAYMENT_TRUST_THRESHOLD = "payment_trust_threshold"
    # Outcome reports the router refuses to count.
    REPORT_MALFORMED = "report_malformed"
    REPORT_UNKNOWN_MESSAGE = "report_unknown_message"
    REPORT_NOT_RECIPIENT = "report_not_recipient"
    REPORT_WRONG_SUBJECT = "report_wrong_subject"
    REPORT_DUPLICATE = "report_duplicate"
    # On the way, and after review.
    UNDELIVERABLE = "undeliverable"
    INTERNAL_ERROR = "internal_error"
    ESCALATION_REJECTED = "escalation_rejected"
    ESCALATION_EXPIRED = "escalation_expired"
    # What a reader makes of an entry no router or reviewer wrote.
    UNPARSEABLE = "unparseable"
    # Payments a human decides.
    PAYMENT_AMOUNT_MISSING = "payment_amount_missing"
    CURRENCY_UNRATED = "currency_unrated"
    NEGATIVE_RECORD = "negative_record"
    PAYMENT_HOLD = "payment_hold"
    PAYMENT_CAP_EXCEEDED = "payment_cap_exceeded"
    DAILY_CAP_EXCEEDED = "daily_cap_exceeded"
    # Delivered.
    TRUST_SUFFICIENT = "trust_sufficient"
    PROBATION = "probation"
    PAYMENT_WITHIN_CAPS = "payment_within_caps"

    @property
    def info(self) -> ReasonInfo:
        """What this reason means and what follows from it."""
        return _INFO[self]

    @property
    def action(self) -> str:
        """The action this reason goes with: deliver, block or escalate."""
        return self.info.action

    @property
    def explanation(self) -> str:
        """What happened, in one sentence."""
        return self.info.explanation

    @property
    def remediation(self) -> str:
        """What the sender (or ops) can do about it."""
        return self.info.remediation

    @property
    def releasable(self) -> bool:
        """Whether a reviewer may release a message blocked for this reason."""
        return self.info.not_releasable is None

    @property
    def penalisable(self) -> bool:
        """Whether a block for this reason may be counted against its sender."""
        return self.info.not_penalisable is None


@dataclass(frozen=True, slots=True)
class ReasonInfo:
    """The words and rules that go with one reason."""

    action: str
    explanation: str
    remediation: str
    # Why a reviewer may not release (None: they may) / penalise (None: they may).
    not_releasable: str | None = None
    not_penalisable: str | None = None


def reasons_for(action: str) -> tuple[Reason, ...]:
    """Every reason that goes with `action`, in declaration order."""
    return tuple(reason for reason in Reason if reason.action == action)


def nearest(code: str, among: tuple[Reason, ...] = tuple(Reason)) -> str | None:
    """The code in `among` closest to a mistyped `code`, for a "did you mean" hint."""
    close = difflib.get_close_matches(code, [reason.value for reason in among], n=1)
    return close[0] if close else None


def known(code: object) -> Reason | None:
    """The Reason for a code read from a record, or None for one this version does not
    know (a router of another version may write one)."""
    try:
        return Reason(str(code))
    except ValueError:
        return None


_FIX_AND_RESEND = "fix the message and send it again (a new id and nonce)"
_INFO: dict[Reason, ReasonInfo] = {
    Reason.MALFORMED: ReasonInfo(
        "block", "the bytes are not a JSON object, or a field fails validation (the error "
        "names the field)", _FIX_AND_RESEND),
    Reason.OVERSIZED: ReasonInfo(
        "block", "the encoded envelope is larger than gates.max_envelope_bytes",
        "send less in one message, or ops raises gates.max_envelope_bytes"),
    Reason.BAD_SIGNATURE: ReasonInfo(
        "block", "the Ed25519 signature does not verify against the sender's did:key over "
        "the RFC 8785 bytes", "sign the canonical bytes with the key of the sender DID "
        "(the SDK and `trust-broker send` do)"),
    Reason.REVOKED_KEY: ReasonInfo(
        "block", "the sender's key was revoked by ops or an issuer",
        "nothing this key sends is delivered; a new key starts afresh",
        not_releasable="the sender's key is revoked; a block for that reason is never a "
        "false positive"),
    Reason.CLOCK_SKEW: ReasonInfo(
        "block", "created_at is further from the broker's clock than gates.max_clock_skew_ms",
        "synchronise the sender's clock (NTP) and send again"),
    Reason.EXPIRED: ReasonInfo(
        "block", "the sender's own expires_at has passed",
        "send it again with a later expires_at, if it is still wanted"),
    Reason.REPLAY: ReasonInfo(
        "block", "the message id or the (sender, nonce) pair was already used within the "
        "dedup window by different bytes", "give every new message its own id and nonce "
        "(publishing the identical bytes again is safe)",
        not_releasable="a replay is a second copy of a message already seen; releasing it "
        "would deliver that message twice",
        not_penalisable="anyone who saw the message can replay it: a replay proves nothing "
        "about its sender"),
    Reason.UNKNOWN_RECIPIENT: ReasonInfo(
        "block", "no agent is provisioned under the recipient DID",
        "check the recipient DID, or ops provisions it (trust-broker provision)"),
    Reason.PRIVACY_VIOLATION: ReasonInfo(
        "block", "a data class, labelled or detected in the body, is not accepted by the "
        "recipient or may not go to its retention", "leave that data out, or send it to a "
        "recipient whose retention the class allows"),
    Reason.PACT_VIOLATION: ReasonInfo(
        "block", "the recipient requires pacts and no active pact covers this message",
        "agree a pact with the recipient (trust-broker pact propose --with DID)"),
    Reason.INSUFFICIENT_TRUST: ReasonInfo(
        "block", "the sender's composite score is below the probation threshold",
        "raise the weakest dimension (trust-broker standing shows the next step)"),
    Reason.VERIFIED_IDENTITY_REQUIRED: ReasonInfo(
        "block", "the sender has no issuer-verified identity, and free evidence never buys "
        "delivery", "prove key possession and present an identity credential from an "
        "issuer ops trusts (trust-broker handshake, trust-broker present)"),
    Reason.PAYMENT_TRUST_THRESHOLD: ReasonInfo(
        "block", "a payment from a sender below the established tier",
        "reach the established tier before sending payments (trust-broker standing)"),
    Reason.REPORT_MALFORMED: ReasonInfo(
        "block", "an outcome report's body is not {message_id, outcome, severity} as "
        "docs/PROTOCOL.md gives it", _FIX_AND_RESEND),
    Reason.REPORT_UNKNOWN_MESSAGE: ReasonInfo(
        "block", "no message with that id was delivered from this peer to the reporter "
        "within the report window", "report only messages you received, within "
        "reports.window_ms of their delivery"),
    Reason.REPORT_NOT_RECIPIENT: ReasonInfo(
        "block", "only the recipient of a delivered message may report its outcome",
        "report only messages delivered to you"),
    Reason.REPORT_WRONG_SUBJECT: ReasonInfo(
        "block", "a report must be addressed to the peer that sent the message",
        "address the report to the sender of the reported message"),
    Reason.REPORT_DUPLICATE: ReasonInfo(
        "block", "that message's outcome was already reported", "nothing: the first "
        "report counts"),
    Reason.UNDELIVERABLE: ReasonInfo(
        "block", "the recipient is registered but no queue is bound for it",
        "ops re-provisions the agent (trust-broker provision)"),
    Reason.INTERNAL_ERROR: ReasonInfo(
        "block", "the router failed on this message (a bug, logged with its trace id)",
        "report it with the trace id; a reviewer may release the message"),
    Reason.ESCALATION_REJECTED: ReasonInfo(
        "block", "a reviewer rejected the escalated message",
        "ask the reviewer (the record says who and why)"),
    Reason.ESCALATION_EXPIRED: ReasonInfo(
        "block", "nobody decided the escalation within escalations.expire_after_ms",
        "send it again, or a reviewer releases it from the blocked stream"),
    Reason.UNPARSEABLE: ReasonInfo(
        "block", "the entry is not a record a router or reviewer wrote",
        "find who published it to the blocked stream (its bytes are kept in raw_b64)",
        not_releasable="this entry is not a record a router wrote, so nothing vouches for "
        "its bytes; it can only be confirmed",
        not_penalisable="this entry is not a record a router wrote: it names no sender"),
    Reason.PAYMENT_AMOUNT_MISSING: ReasonInfo(
        "escalate", "a payment without a payment intent names no amount, so no cap can "
        "vouch for it", "send payments with a payment intent (amount and currency)"),
    Reason.CURRENCY_UNRATED: ReasonInfo(
        "escalate", "the policy has no rate for the payment's currency",
        "ops adds a rate (currency.rates), or pay in a rated currency"),
    Reason.NEGATIVE_RECORD: ReasonInfo(
        "escalate", "a payment from a sender whose verified record is worse than a "
        "newcomer's", "build reputation through successful interactions"),
    Reason.PAYMENT_HOLD: ReasonInfo(
        "escalate", "a serious report about one of the sender's payments awaits a reviewer",
        "a reviewer decides the report (trust-broker reports list)"),
    Reason.PAYMENT_CAP_EXCEEDED: ReasonInfo(
        "escalate", "the amount is above the tier's per-message cap",
        "a reviewer decides it; a higher tier raises the cap"),
    Reason.DAILY_CAP_EXCEEDED: ReasonInfo(
        "escalate", "the payment would take the sender past its tier's rolling 24 h cap",
        "a reviewer decides it; a higher tier raises the cap"),
    Reason.TRUST_SUFFICIENT: ReasonInfo(
        "deliver", "the sender's tier is enough for this message", "none needed"),
    Reason.PROBATION: ReasonInfo(
        "deliver", "delivered, marked probation: the sender may not send payments yet",
        "reach the established tier to send payments (trust-broker standing)"),
    Reason.PAYMENT_WITHIN_CAPS: ReasonInfo(
        "deliver", "a payment within the sender's tier caps", "none needed"),
}  # fmt: skip

# Every reason a record on the blocked stream can carry.
BLOCK_REASONS: tuple[Reason, ...] = reasons_for("block")
ESCALATION_REASONS: tuple[Reason, ...] = reasons_for("escalate")
