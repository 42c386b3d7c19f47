"""broker/core/plan.py: one message's decision and the state changes it implies, as tables."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker.core.decision import Action, Tier
from broker.core.envelope import Envelope
from broker.core.plan import (
    CAP_EXCEEDED,
    REPORT_APPLIED,
    ApplyReport,
    Facts,
    ReserveSpend,
    plan_message,
)
from broker.core.reports import REFUSALS, Report, reporter_weight
from broker.core.scoring import blocked, decide, reporter_standing
from broker.core.state import TrustContext
from tests.unit.factories import (
    DEFAULT_POLICY,
    NOW,
    SENDER,
    context,
    decoded,
    established_peer,
    payment_envelope,
    peer,
    sign_envelope,
    trusted_peer,
)

REPORT_BODY = {"message_id": "msg-reported-1", "outcome": "success"}


def _report(body: Any = None, **overrides: Any) -> Envelope:
    return sign_envelope(kind="report", body=REPORT_BODY if body is None else body, **overrides)


def _plan(envelope, ctx: TrustContext, *, signature_ok: bool = True, replayed: bool = False):
    return plan_message(
        decoded(envelope), Facts(signature_ok, ctx, replayed=replayed), DEFAULT_POLICY, NOW
    )


@pytest.mark.parametrize(
    ("envelope", "ctx", "signature_ok", "replayed", "action", "effects", "finishes"),
    [
        pytest.param(sign_envelope(), context(trusted_peer()), True, False,
                     Action.DELIVER, (), True, id="data-delivered-changes-nothing"),
        pytest.param(payment_envelope("25.00"), context(trusted_peer()), True, False,
                     Action.DELIVER, (ReserveSpend,), True, id="payment-delivered-reserves"),
        pytest.param(sign_envelope(), context(trusted_peer()), False, False,
                     Action.BLOCK, (), False, id="forged-not-finished"),
        pytest.param(payment_envelope("25.00"), context(trusted_peer()), False, False,
                     Action.BLOCK, (), False, id="forged-payment-reserves-nothing"),
        pytest.param(sign_envelope(), context(trusted_peer(), replayed=True), True, True,
                     Action.BLOCK, (), False, id="replay-not-finished"),
        pytest.param(_report(), context(trusted_peer()), True, False,
                     Action.DELIVER, (ApplyReport,), True, id="report-applied"),
        pytest.param(_report(), context(trusted_peer(), recipient=None), True, False,
                     Action.BLOCK, (ApplyReport,), True,
                     id="report-counts-despite-unknown-recipient"),
        pytest.param(_report(), context(trusted_peer()), False, False,
                     Action.BLOCK, (), False, id="forged-report-counts-nothing"),
        pytest.param(_report(payment=payment_envelope("25.00").payment),
                     context(trusted_peer()), True, False, Action.DELIVER,
                     (ApplyReport, ReserveSpend), True, id="report-before-its-payment"),
    ],
)  # fmt: skip
def test_plan_lists_the_state_changes_a_decision_implies(
    envelope, ctx, signature_ok, replayed, action, effects, finishes
) -> None:
    plan = _plan(envelope, ctx, signature_ok=signature_ok, replayed=replayed)
    assert plan.decision.action is action
    assert tuple(type(effect) for effect in plan.effects) == effects
    assert plan.finishes is finishes
    # The plan's decision is the scoring core's, whatever effects follow.
    expected = decide(decoded(envelope), ctx, DEFAULT_POLICY, NOW, signature_ok=signature_ok)
    assert plan.decision == expected


@pytest.mark.parametrize(
    ("peer_state", "amount", "cap_major", "reference_minor"),
    [
        pytest.param(trusted_peer(), "25.00", 50_000, 2_500, id="trusted-cap"),
        pytest.param(trusted_peer(), "0.01", 50_000, 1, id="one-cent"),
    ],
)
def test_a_delivered_payment_reserves_its_amount_against_its_tiers_cap(
    peer_state, amount, cap_major, reference_minor
) -> None:
    envelope = payment_envelope(amount)
    plan = _plan(envelope, context(peer_state))
    assert plan.decision.tier is Tier.TRUSTED
    (spend,) = plan.effects
    assert spend == ReserveSpend(SENDER.did, envelope.id, reference_minor, cap_major * 100)


def test_an_established_peers_payment_reserves_against_the_established_cap() -> None:
    envelope = payment_envelope("5.00")
    plan = _plan(envelope, context(established_peer()))
    assert (plan.decision.action, plan.decision.tier) == (Action.DELIVER, Tier.ESTABLISHED)
    cap_minor = DEFAULT_POLICY.caps.established_per_day * 100
    assert plan.effects == (ReserveSpend(SENDER.did, envelope.id, 500, cap_minor),)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"message_id": "msg-reported-1"}, id="no-outcome"),
        pytest.param({"message_id": "short", "outcome": "success"}, id="short-id"),
        pytest.param({**REPORT_BODY, "extra": 1}, id="unknown-field"),
        pytest.param(
            {"message_id": "msg-reported-1", "outcome": "failure", "severity": "low"},
            id="failure-with-severity",
        ),
    ],
)
def test_a_malformed_report_is_blocked_and_changes_nothing(body) -> None:
    envelope = _report(body, payment=payment_envelope("25.00").payment)
    plan = _plan(envelope, context(trusted_peer()))
    assert plan.decision.action is Action.BLOCK
    assert plan.decision.reasons == ("report_malformed",)
    assert plan.effects == ()  # neither counted nor its payment reserved
    assert plan.finishes


def test_a_reports_weight_is_its_senders_standing_and_names_its_organisation() -> None:
    ctx = context(trusted_peer())
    envelope = _report()
    (effect,) = _plan(envelope, ctx).effects
    assert isinstance(effect, ApplyReport)
    assert effect.report == Report("msg-reported-1", "success", None)
    standing = reporter_standing(envelope, ctx, DEFAULT_POLICY, NOW)
    assert effect.weight == reporter_weight(standing, DEFAULT_POLICY) > 0
    credential = ctx.peer.credential
    assert credential is not None
    assert effect.reporter_org == f"{credential.issuer}|{credential.organisation}"


def test_a_reporter_without_credential_is_its_own_organisation_and_weighs_nothing() -> None:
    (effect,) = _plan(_report(), context(peer())).effects
    assert isinstance(effect, ApplyReport)
    assert effect.reporter_org == SENDER.did
    assert effect.weight == 0.0


DELIVERED = _plan(payment_envelope("25.00"), context(trusted_peer())).decision
SPEND = ReserveSpend(SENDER.did, "msg-1", 2_500, 5_000_000)
REPORT = ApplyReport(Report("msg-reported-1", "success", None), 1.0, "org")


@pytest.mark.parametrize(
    ("effect", "refusal", "action", "reasons"),
    [
        pytest.param(SPEND, None, Action.DELIVER, DELIVERED.reasons, id="reserved"),
        pytest.param(SPEND, CAP_EXCEEDED, Action.ESCALATE,
                     (CAP_EXCEEDED, *DELIVERED.reasons[1:]), id="over-the-cap-escalated"),
        pytest.param(REPORT, None, Action.DELIVER, (*DELIVERED.reasons, REPORT_APPLIED),
                     id="report-counted"),
        pytest.param(REPORT, "report_duplicate", Action.BLOCK, ("report_duplicate",),
                     id="report-refused-blocked"),
    ],
)  # fmt: skip
def test_what_a_refusal_makes_of_the_decision(effect, refusal, action, reasons) -> None:
    settled = effect.settle(DELIVERED, refusal, DEFAULT_POLICY)
    assert settled.action is action
    assert settled.reasons == reasons
    if refusal == "report_duplicate":
        expected = blocked(refusal, REFUSALS[refusal], DEFAULT_POLICY)
        assert settled == expected


def test_a_spend_applies_only_to_a_payment_still_being_delivered() -> None:
    assert SPEND.applies(DELIVERED)
    assert not SPEND.applies(dataclasses.replace(DELIVERED, action=Action.BLOCK))
    assert not SPEND.applies(dataclasses.replace(DELIVERED, action=Action.ESCALATE))
    assert REPORT.applies(dataclasses.replace(DELIVERED, action=Action.BLOCK))
