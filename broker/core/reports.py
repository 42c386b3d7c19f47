"""Outcome reports: the body of a `report` envelope and what it is worth (pure).

A report's envelope is signed by the reporter and addressed to the peer it is about.
Its body names the delivered message and the outcome:

    {"message_id": "...", "outcome": "success" | "failure" | "policy_violation"
     | "hallucination", "severity": "low" | "medium" | "high" | "critical"}

`severity` is required for policy_violation and hallucination. The store checks that the
reporter was the recipient of that delivered message, within the window, and only once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.core.envelope import Envelope
from broker.core.policy import Policy
from broker.errors import EnvelopeError
from broker.reasons import Reason

OUTCOMES = ("success", "failure", "policy_violation", "hallucination")
SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class Report:
    """A parsed outcome report."""

    message_id: str
    outcome: str
    severity: str | None

    @property
    def success(self) -> bool:
        """True for a success report."""
        return self.outcome == "success"


def parse_report(body: Any) -> Report:
    """The report in an envelope body; EnvelopeError (code report_malformed) otherwise."""
    if not isinstance(body, dict) or set(body) - {"message_id", "outcome", "severity"}:
        raise EnvelopeError(
            "report body has message_id, outcome, severity", code=Reason.REPORT_MALFORMED
        )
    message_id, outcome, severity = (
        body.get("message_id"),
        body.get("outcome"),
        body.get("severity"),
    )
    if not isinstance(message_id, str) or not 8 <= len(message_id) <= 128:
        raise EnvelopeError("report needs the message_id it is about", code=Reason.REPORT_MALFORMED)
    if outcome not in OUTCOMES:
        raise EnvelopeError(f"outcome must be one of {OUTCOMES}", code=Reason.REPORT_MALFORMED)
    needs_severity = outcome in ("policy_violation", "hallucination")
    if needs_severity and severity not in SEVERITIES:
        raise EnvelopeError(
            f"{outcome} needs a severity in {SEVERITIES}", code=Reason.REPORT_MALFORMED
        )
    if not needs_severity and severity is not None:
        raise EnvelopeError(f"{outcome} takes no severity", code=Reason.REPORT_MALFORMED)
    return Report(message_id, str(outcome), severity)


def domain_of(env: Envelope) -> str:
    """The domain a message's outcome counts in: its kind, except that every
    payment-bearing message (a payment intent on any kind) counts as a payment."""
    return "payment" if env.is_payment else env.kind


def reporter_weight(reporter_composite: float, policy: Policy) -> float:
    """How much a reporter's word counts: 0 below the floor, 1 at full trust."""
    model = policy.reports
    span = model.reporter_full - model.reporter_floor
    return min(1.0, max(0.0, (reporter_composite - model.reporter_floor) / span))


def failure_units(report: Report, policy: Policy) -> float:
    """Failure units of a negative report (each multiplies reputation by 0.85)."""
    if report.success:
        return 0.0
    if report.severity is None:
        return 1.0
    return policy.reports.severity_units[report.severity]


# The refusals the store can answer a report with, and what they mean.
REFUSALS: dict[str, str] = {
    reason: reason.explanation
    for reason in (
        Reason.REPORT_UNKNOWN_MESSAGE, Reason.REPORT_NOT_RECIPIENT, Reason.REPORT_WRONG_SUBJECT,
        Reason.REPORT_DUPLICATE,
    )
}  # fmt: skip
