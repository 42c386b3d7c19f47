"""Compliance: does this message stay within what the sender declared and agreed?

Evidence, strongest first: an active pact covering the message (the recipient's own signed
consent). A capability manifest is self-declared, so it only narrows: a message outside
the sender's own unexpired manifest scores low, one inside it scores no higher than
nothing known (`compliance.manifest` <= `no_evidence`). A message the recipient does not
accept scores lowest.
"""

from __future__ import annotations

from broker.core.envelope import Envelope
from broker.core.policy import Policy
from broker.core.scoring.base import DimensionScore
from broker.core.state import PactTerms, TrustContext


def score_compliance(
    env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int
) -> DimensionScore:
    """Score the message against the sender's manifest, the pact and the recipient."""
    levels = policy.compliance
    recipient = ctx.recipient
    accepted = recipient.accepted_kinds if recipient is not None else None
    if accepted is not None and env.kind not in accepted:
        return DimensionScore(levels.violation, ("kind_not_accepted",))
    declared = ctx.peer.manifest
    manifest = declared.kinds if declared is not None and now_ms < declared.expires_at_ms else None
    if manifest is not None and env.kind not in manifest:
        return DimensionScore(levels.outside_manifest, ("kind_outside_manifest",))
    if ctx.pact is not None and pact_covers(ctx.pact, env, now_ms):
        return DimensionScore(levels.pact, ("pact_in_scope",))
    if manifest is not None:
        return DimensionScore(levels.manifest, ("manifest_in_scope",))
    return DimensionScore(levels.no_evidence, ("compliance_no_evidence",))


def pact_covers(pact: PactTerms, env: Envelope, now_ms: int) -> bool:
    """True when `pact` is active and the message is inside its scope."""
    if now_ms >= pact.expires_at_ms or pact.sender != env.sender or pact.recipient != env.recipient:
        return False
    if env.kind not in pact.kinds or not set(env.data_classes) <= pact.data_classes:
        return False
    if env.payment is None:
        return True
    if pact.currency != env.payment.currency:
        return False
    return env.payment.minor_units <= pact.max_payment_minor
