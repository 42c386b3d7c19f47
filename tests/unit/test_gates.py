"""Hard gates: each blocks with its own reason code, before any scoring happens."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from broker.core.decision import Action, Tier
from broker.core.envelope import PaymentIntent, decode_envelope
from broker.core.scoring import decide, reject_undecodable
from broker.core.scoring.gates import first_failed_gate
from broker.core.state import TrustContext
from broker.errors import EnvelopeError

from .factories import (
    DEFAULT_POLICY,
    MINUTE_MS,
    NOW,
    OTHER,
    context,
    decoded,
    pact,
    peer,
    recipient,
    sign_envelope,
    trusted_peer,
    wire,
)

SKEW = DEFAULT_POLICY.gates.max_clock_skew_ms


def _gate(envelope_fields: dict[str, Any], ctx: TrustContext, *, signature_ok: bool = True) -> Any:
    decision = decide(
        decoded(sign_envelope(**envelope_fields)),
        ctx,
        DEFAULT_POLICY,
        NOW,
        signature_ok=signature_ok,
    )
    return decision.gate


def _trusted(**overrides: Any) -> TrustContext:
    """A trusted sender's context: a pass means "no gate", never "too little trust"."""
    return context(trusted_peer(), **overrides)


def _keeps(retention: str) -> TrustContext:
    return _trusted(recipient=recipient(retention=retention))


def _accepts(*labels: str) -> TrustContext:
    return _trusted(recipient=recipient(accepted_data_classes=frozenset(labels)))


def _pact_required(**pact_fields: Any) -> TrustContext:
    return _trusted(recipient=recipient(requires_pact=True), pact=pact(**pact_fields))


CARD = {"data_classes": ("payment_card",)}
CARD_IN_BODY = {"body": {"note": "charge card 4111 1111 1111 1111"}}
HEALTH = {"data_classes": ("health",)}
OLD = NOW - MINUTE_MS


def _pay(amount: str, currency: str = "USD") -> dict[str, Any]:
    return {"kind": "payment", "payment": PaymentIntent(currency=currency, amount=amount)}


# envelope fields, context, the gate expected (None: the message passes every gate)
GATES = [
    pytest.param({}, context(replace(trusted_peer(), revoked=True)), "revoked_key", id="revoked"),
    # clock_skew, both directions, inside, at and outside 5 minutes
    pytest.param({"created_at": NOW - SKEW + 1}, _trusted(), None, id="past-inside"),
    pytest.param({"created_at": NOW - SKEW}, _trusted(), None, id="past-at-limit"),
    pytest.param({"created_at": NOW - SKEW - 1}, _trusted(), "clock_skew", id="past-outside"),
    pytest.param({"created_at": NOW + SKEW - 1}, _trusted(), None, id="future-inside"),
    pytest.param({"created_at": NOW + SKEW}, _trusted(), None, id="future-at-limit"),
    pytest.param({"created_at": NOW + SKEW + 1}, _trusted(), "clock_skew", id="future-outside"),
    pytest.param({"created_at": NOW - 3_600_000}, _trusted(), "clock_skew", id="an-hour-old"),
    pytest.param({"created_at": OLD, "expires_at": NOW}, _trusted(), "expired", id="expires-now"),
    pytest.param({"created_at": OLD, "expires_at": NOW - 1}, _trusted(), "expired", id="expired"),
    pytest.param({"created_at": OLD, "expires_at": NOW + 1}, _trusted(), None, id="expires-soon"),
    pytest.param({}, _trusted(replayed=True), "replay", id="replay"),
    pytest.param({}, _trusted(recipient=None), "unknown_recipient", id="unknown-recipient"),
    # privacy_violation: retention limits per data class, and the recipient's accepted classes
    pytest.param(CARD, _keeps("permanent"), "privacy_violation", id="card-to-permanent"),
    pytest.param(CARD, _keeps("temporary"), "privacy_violation", id="card-to-temporary"),
    pytest.param(CARD, _keeps("ephemeral"), None, id="card-to-ephemeral"),
    pytest.param(HEALTH, _keeps("temporary"), None, id="health-to-temporary"),
    pytest.param(HEALTH, _keeps("permanent"), "privacy_violation", id="health-to-permanent"),
    pytest.param(
        {"data_classes": ("telemetry",)},
        _keeps("permanent"),
        None,
        id="unrestricted-label-to-permanent",
    ),
    pytest.param(
        {"data_classes": ("pii",)}, _accepts(), "privacy_violation", id="label-not-accepted"
    ),
    pytest.param(
        {"data_classes": ("pii", "health")},
        _accepts("pii"),
        "privacy_violation",
        id="second-label-not-accepted",
    ),
    pytest.param({"data_classes": ("pii",)}, _accepts("pii"), None, id="label-accepted"),
    # ...and a class found in the body counts as if the sender had labelled it
    pytest.param(CARD_IN_BODY, _keeps("permanent"), "privacy_violation", id="card-in-body"),
    pytest.param(CARD_IN_BODY, _keeps("ephemeral"), None, id="card-in-body-to-ephemeral"),
    pytest.param(
        {"body": {"reply_to": "alice@example.com"}},
        _accepts("health"),
        "privacy_violation",
        id="email-in-body-not-accepted",
    ),
    pytest.param(
        {"body": {"note": "call +1 (555) 123-4567 before 2026-11-23, order 4500012345"}},
        _keeps("permanent"),
        None,
        id="ordinary-body-to-permanent",
    ),
    # pact_violation: the recipient requires an active pact that covers the message
    pytest.param(
        {}, _trusted(recipient=recipient(requires_pact=True)), "pact_violation", id="pact-missing"
    ),
    pytest.param({}, _pact_required(), None, id="pact-in-scope"),
    pytest.param({}, _pact_required(expires_at_ms=NOW), "pact_violation", id="pact-expired"),
    pytest.param({"kind": "report"}, _pact_required(), "pact_violation", id="pact-kind"),
    pytest.param(HEALTH, _pact_required(), "pact_violation", id="pact-label"),
    pytest.param(_pay("1000.00"), _pact_required(), None, id="pact-amount-at-limit"),
    pytest.param(_pay("1000.01"), _pact_required(), "pact_violation", id="pact-amount-over"),
    pytest.param(_pay("1", "EUR"), _pact_required(), "pact_violation", id="pact-currency"),
    pytest.param(
        {}, _pact_required(recipient=OTHER.did), "pact_violation", id="pact-for-another-recipient"
    ),
    # the clean message every row above departs from
    pytest.param({}, _trusted(), None, id="no-gate"),
]


@pytest.mark.parametrize(("fields", "ctx", "gate"), GATES)
def test_hard_gate(fields: dict[str, Any], ctx: TrustContext, gate: str | None) -> None:
    assert _gate(fields, ctx) == gate


def test_bad_signature_is_detected_by_decide_itself() -> None:
    obj = wire(sign_envelope())
    obj["body"] = {"task": "transfer everything"}
    tampered = decode_envelope(orjson.dumps(obj))
    decision = decide(tampered, context(trusted_peer()), DEFAULT_POLICY, NOW)
    assert decision.gate == "bad_signature"
    assert (
        decide(decoded(sign_envelope()), context(trusted_peer()), DEFAULT_POLICY, NOW).gate is None
    )


def test_caller_reported_bad_signature_blocks() -> None:
    assert _gate({}, context(trusted_peer()), signature_ok=False) == "bad_signature"


@pytest.mark.parametrize(
    ("fields", "ctx", "signature_ok", "gate"),
    [
        pytest.param(
            {"created_at": NOW - 2 * SKEW},
            context(peer(revoked=True), replayed=True),
            False,
            "bad_signature",
            id="signature-first",
        ),
        pytest.param(
            {"created_at": NOW - 2 * SKEW},
            context(peer(revoked=True), replayed=True),
            True,
            "revoked_key",
            id="then-revocation",
        ),
        pytest.param(
            {"created_at": NOW - 2 * SKEW},
            context(peer(), replayed=True, recipient=None),
            True,
            "clock_skew",
            id="then-skew",
        ),
        pytest.param(
            {},
            context(peer(), replayed=True, recipient=None),
            True,
            "replay",
            id="replay-before-recipient",
        ),
    ],
)
def test_gates_run_in_order(
    fields: dict[str, Any], ctx: TrustContext, signature_ok: bool, gate: str
) -> None:
    assert _gate(fields, ctx, signature_ok=signature_ok) == gate


@pytest.mark.parametrize(
    ("fields", "ctx"),
    [
        pytest.param({}, context(trusted_peer(), replayed=True), id="replay"),
        pytest.param({"created_at": NOW - 2 * SKEW}, context(trusted_peer()), id="skew"),
        pytest.param({}, context(trusted_peer(), recipient=None), id="unknown-recipient"),
    ],
)
def test_gates_run_before_scoring(fields: dict[str, Any], ctx: TrustContext) -> None:
    decision = decide(decoded(sign_envelope(**fields)), ctx, DEFAULT_POLICY, NOW, signature_ok=True)
    assert decision.action is Action.BLOCK
    assert decision.tier is Tier.BLOCKED
    assert decision.composite is None
    assert decision.dimensions == {}
    assert decision.weakest is None
    assert decision.reasons == (decision.gate,)
    assert decision.policy_version == DEFAULT_POLICY.version


def test_clock_skew_limit_follows_the_policy() -> None:
    policy = DEFAULT_POLICY.model_copy(
        update={"gates": DEFAULT_POLICY.gates.model_copy(update={"max_clock_skew_ms": 1_000})}
    )
    late = decoded(sign_envelope(created_at=NOW - 1_001))
    assert (
        decide(late, context(trusted_peer()), policy, NOW, signature_ok=True).gate == "clock_skew"
    )
    assert (
        decide(late, context(trusted_peer()), DEFAULT_POLICY, NOW, signature_ok=True).gate is None
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"x" * 300_000, "oversized"), (b"{", "malformed"), (b"{}", "malformed")],
    ids=["oversized", "not-json", "missing-fields"],
)
def test_undecodable_bytes_get_a_blocking_decision(raw: bytes, code: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(raw)
    decision = reject_undecodable(caught.value, DEFAULT_POLICY)
    assert (decision.action, decision.tier, decision.gate) == (Action.BLOCK, Tier.BLOCKED, code)
    assert decision.reasons == (code,)
    assert decision.composite is None
    assert orjson.loads(orjson.dumps(decision.to_dict()))["gate"] == code


def test_a_detected_class_is_named_as_unlabelled() -> None:
    env = sign_envelope(body={"pan": "4111111111111111"})
    assert first_failed_gate(env, True, _keeps("permanent"), DEFAULT_POLICY, NOW) == (
        "privacy_violation",
        "data class 'payment_card' (detected in the body, not labelled) may go only to "
        "ephemeral retention; recipient keeps data permanent",
    )
