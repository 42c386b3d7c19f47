"""Composite, tier boundaries and payment caps: where one more millionth changes the action."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core.decision import Action, Tier
from broker.core.envelope import Envelope, PaymentIntent
from broker.core.policy import DIMENSIONS, CurrencyModel, Policy, Weights
from broker.core.scoring import decide
from broker.core.scoring.tiers import capped_tier, composite, tier_of
from broker.core.state import PeerState

from .factories import (
    DEFAULT_POLICY,
    context,
    decoded,
    identity_verified_peer,
    payment_envelope,
    peer,
    possession,
    sign_envelope,
    single_dimension_policy,
)

BLOCK_LOW = (Action.BLOCK, "insufficient_trust")
PROBATION = (Action.DELIVER, "probation")
SUFFICIENT = (Action.DELIVER, "trust_sufficient")
PAY_BLOCKED = (Action.BLOCK, "payment_trust_threshold")
PAID = (Action.DELIVER, "payment_within_caps")
OVER_CAP = (Action.ESCALATE, "payment_cap_exceeded")

# composite, tier, then (action, reason) for: data, a 50 USD payment, a 5,000 USD payment
BOUNDARIES = [
    pytest.param(0.50 - 1e-6, Tier.BLOCKED, BLOCK_LOW, BLOCK_LOW, BLOCK_LOW, id="0.50-below"),
    pytest.param(0.50, Tier.PROBATION, PROBATION, PAY_BLOCKED, PAY_BLOCKED, id="0.50-at"),
    pytest.param(0.50 + 1e-6, Tier.PROBATION, PROBATION, PAY_BLOCKED, PAY_BLOCKED, id="0.50-above"),
    pytest.param(0.60 - 1e-6, Tier.PROBATION, PROBATION, PAY_BLOCKED, PAY_BLOCKED, id="0.60-below"),
    pytest.param(0.60, Tier.ESTABLISHED, SUFFICIENT, PAID, OVER_CAP, id="0.60-at"),
    pytest.param(0.60 + 1e-6, Tier.ESTABLISHED, SUFFICIENT, PAID, OVER_CAP, id="0.60-above"),
    pytest.param(0.80 - 1e-6, Tier.ESTABLISHED, SUFFICIENT, PAID, OVER_CAP, id="0.80-below"),
    pytest.param(0.80, Tier.TRUSTED, SUFFICIENT, PAID, PAID, id="0.80-at"),
    pytest.param(0.80 + 1e-6, Tier.TRUSTED, SUFFICIENT, PAID, PAID, id="0.80-above"),
    pytest.param(0.0, Tier.BLOCKED, BLOCK_LOW, BLOCK_LOW, BLOCK_LOW, id="zero"),
    pytest.param(1.0, Tier.TRUSTED, SUFFICIENT, PAID, PAID, id="one"),
]


@pytest.mark.parametrize(("score", "tier", "data", "pay_small", "pay_large"), BOUNDARIES)
def test_tier_boundaries(
    score: float,
    tier: Tier,
    data: tuple[Action, str],
    pay_small: tuple[Action, str],
    pay_large: tuple[Action, str],
) -> None:
    policy = single_dimension_policy(score)
    ctx = context(identity_verified_peer())
    for envelope, expected in [
        (sign_envelope(), data),
        (payment_envelope("50.00"), pay_small),
        (payment_envelope("5000.00"), pay_large),
    ]:
        decision = decide(decoded(envelope), ctx, policy, envelope.created_at)
        assert decision.composite == pytest.approx(score, abs=1e-12)
        assert decision.tier is tier
        assert (decision.action, decision.reasons[0]) == expected


@pytest.mark.parametrize(
    ("score", "tier"),
    [(p.values[0], p.values[1]) for p in BOUNDARIES],
    ids=[p.id for p in BOUNDARIES],
)
def test_tier_of(score: float, tier: Tier) -> None:
    assert tier_of(score, DEFAULT_POLICY) is tier


@pytest.mark.parametrize("score", [0.5, 0.6, 0.8, 0.7, 0.3])
def test_uniform_scores_land_exactly_on_the_edge(score: float) -> None:
    # 0.3*s + 0.25*s + ... is not exactly s in binary floating point; the composite is
    # rounded so that a sender scoring s everywhere gets the tier that starts at s.
    scores = dict.fromkeys(DIMENSIONS, score)
    assert composite(scores, DEFAULT_POLICY) == score
    assert tier_of(composite(scores, DEFAULT_POLICY), DEFAULT_POLICY) is tier_of(
        score, DEFAULT_POLICY
    )


def _pay(amount: str, currency: str = "USD") -> Envelope:
    return payment_envelope(amount, currency)


def _pay_minor(minor: int, currency: str = "USD") -> Envelope:
    return sign_envelope(
        kind="payment", payment=PaymentIntent(currency=currency, amount_minor=minor)
    )


ESTABLISHED = 0.70
TRUSTED = 0.90
DAILY = (Action.ESCALATE, "daily_cap_exceeded")
UNRATED = (Action.ESCALATE, "currency_unrated")
# Caps and the daily sum are in the reference currency (USD by default, the only rate).
RATES = CurrencyModel(
    reference="USD", rates={"USD": "1", "EUR": "1.10", "JPY": "0.0068", "KWD": "3.25"}
)

# tier score, envelope, 24 h spend so far (reference minor units), expected action and reason
CAPS = [
    pytest.param(ESTABLISHED, _pay("100.00"), 0, PAID, id="established-at-per-message-cap"),
    pytest.param(ESTABLISHED, _pay("100.01"), 0, OVER_CAP, id="established-over-per-message"),
    pytest.param(ESTABLISHED, _pay_minor(10_000), 0, PAID, id="established-cap-minor-form"),
    pytest.param(ESTABLISHED, _pay_minor(10_001), 0, OVER_CAP, id="established-over-minor-form"),
    pytest.param(ESTABLISHED, _pay("50.00"), 450_00, PAID, id="established-at-daily-cap"),
    pytest.param(
        ESTABLISHED,
        _pay("50.01"),
        450_00,
        (Action.ESCALATE, "daily_cap_exceeded"),
        id="established-over-daily-cap",
    ),
    pytest.param(
        ESTABLISHED,
        _pay("1.00"),
        500_00,
        (Action.ESCALATE, "daily_cap_exceeded"),
        id="established-daily-cap-spent",
    ),
    pytest.param(ESTABLISHED, _pay("100", "JPY"), 0, UNRATED, id="no-rate-escalates-jpy"),
    pytest.param(ESTABLISHED, _pay("0.001", "KWD"), 0, UNRATED, id="no-rate-escalates-kwd"),
    pytest.param(
        ESTABLISHED,
        sign_envelope(kind="payment"),
        0,
        (Action.ESCALATE, "payment_amount_missing"),
        id="payment-kind-no-amount",
    ),
    pytest.param(
        ESTABLISHED,
        sign_envelope(kind="request", payment=PaymentIntent(currency="USD", amount="100.01")),
        0,
        OVER_CAP,
        id="payment-intent-on-request",
    ),
    pytest.param(TRUSTED, _pay("100.01"), 0, PAID, id="trusted-over-established-cap"),
    pytest.param(TRUSTED, _pay("10000.00"), 0, PAID, id="trusted-at-per-message-cap"),
    pytest.param(TRUSTED, _pay("10000.01"), 0, OVER_CAP, id="trusted-over-per-message-cap"),
    pytest.param(TRUSTED, _pay("10000.00"), 40_000_00, PAID, id="trusted-at-daily-cap"),
    pytest.param(
        TRUSTED,
        _pay("10000.00"),
        40_000_01,
        (Action.ESCALATE, "daily_cap_exceeded"),
        id="trusted-over-daily-cap",
    ),
    pytest.param(0.55, _pay("0.01"), 0, PAY_BLOCKED, id="probation-blocks-any-payment"),
    pytest.param(
        0.55, sign_envelope(kind="payment"), 0, PAY_BLOCKED, id="probation-blocks-payment-kind"
    ),
]


@pytest.mark.parametrize(("score", "envelope", "spent", "expected"), CAPS)
def test_payment_caps(
    score: float, envelope: Envelope, spent: int, expected: tuple[Action, str]
) -> None:
    ctx = context(_verified(spent_24h_ref=spent))
    decision = decide(decoded(envelope), ctx, single_dimension_policy(score), envelope.created_at)
    assert (decision.action, decision.reasons[0]) == expected


def _verified(**fields: Any) -> PeerState:
    from dataclasses import replace

    return replace(identity_verified_peer(), **fields)


# caps in reference units: amount, currency, 24 h spend in USD cents, action and reason
CONVERTED = [
    pytest.param("14705", "JPY", 0, PAID, id="jpy-just-under-100-usd"),
    pytest.param("14706", "JPY", 0, OVER_CAP, id="jpy-just-over-100-usd"),
    pytest.param("30.769", "KWD", 0, PAID, id="kwd-under-100-usd"),
    pytest.param("100.000", "KWD", 0, OVER_CAP, id="100-kwd-is-325-usd"),
    pytest.param("90.90", "EUR", 0, PAID, id="eur-99.99-usd"),
    pytest.param("90.91", "EUR", 0, OVER_CAP, id="eur-rounds-up-to-100.01-usd"),
    pytest.param("60.00", "EUR", 440_00, DAILY, id="daily-sum-counts-every-currency"),
    pytest.param("54.54", "EUR", 440_00, PAID, id="daily-sum-with-room-left"),
]


@pytest.mark.parametrize(("amount", "currency", "spent", "expected"), CONVERTED)
def test_caps_are_in_the_reference_currency(
    amount: str, currency: str, spent: int, expected: tuple[Action, str]
) -> None:
    policy = single_dimension_policy(ESTABLISHED).model_copy(update={"currency": RATES})
    envelope = _pay(amount, currency)
    ctx = context(_verified(spent_24h_ref=spent))
    decision = decide(decoded(envelope), ctx, policy, envelope.created_at)
    assert (decision.action, decision.reasons[0]) == expected


@pytest.mark.parametrize("score", [0.5, 0.6, 0.8, 1.0])
def test_without_a_verified_identity_no_score_leaves_the_blocked_tier(score: float) -> None:
    assert capped_tier(score, DEFAULT_POLICY, identity_verified=False) == (
        Tier.BLOCKED, "verified_identity_required",
    )  # fmt: skip
    assert capped_tier(score, DEFAULT_POLICY, identity_verified=True) == (
        tier_of(score, DEFAULT_POLICY), None,
    )  # fmt: skip
    # A key with possession only (no credential) scoring `score` on reputation alone.
    decision = decide(
        decoded(sign_envelope()), context(peer(**possession())), single_dimension_policy(score),
        sign_envelope().created_at,
    )  # fmt: skip
    assert (decision.tier, decision.reasons[0], decision.weakest) == (
        Tier.BLOCKED, "verified_identity_required", "identity",
    )  # fmt: skip


def test_caps_follow_the_policy() -> None:
    base = single_dimension_policy(ESTABLISHED)
    policy = base.model_copy(
        update={"caps": base.caps.model_copy(update={"established_per_message": 10})}
    )
    envelope = _pay("10.01")
    ctx = context(identity_verified_peer())
    assert decide(decoded(envelope), ctx, base, envelope.created_at).action is Action.DELIVER
    assert decide(decoded(envelope), ctx, policy, envelope.created_at).action is Action.ESCALATE


unit = st.floats(min_value=0.0, max_value=1.0)
scores_st = st.fixed_dictionaries({name: unit for name in DIMENSIONS})


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """A policy with arbitrary valid weights (non-negative, summing to 1)."""
    raw = draw(st.lists(unit, min_size=5, max_size=5).filter(lambda xs: math.fsum(xs) > 1e-6))
    total = math.fsum(raw)
    return Policy(
        weights=Weights(**{name: x / total for name, x in zip(DIMENSIONS, raw, strict=True)})
    )


@given(scores_st, policies())
def test_composite_lies_in_unit_interval(scores: dict[str, float], policy: Policy) -> None:
    assert 0.0 <= composite(scores, policy) <= 1.0


@given(scores_st, policies(), st.sampled_from(DIMENSIONS), unit)
def test_raising_one_dimension_never_lowers_composite(
    scores: dict[str, float], policy: Policy, dimension: str, new: float
) -> None:
    raised = {**scores, dimension: max(scores[dimension], new)}
    assert composite(raised, policy) >= composite(scores, policy)


@given(scores_st, st.sampled_from(DIMENSIONS), unit)
def test_raising_one_dimension_never_lowers_tier(
    scores: dict[str, float], dimension: str, new: float
) -> None:
    order = list(Tier)
    raised = {**scores, dimension: max(scores[dimension], new)}
    before = tier_of(composite(scores, DEFAULT_POLICY), DEFAULT_POLICY)
    after = tier_of(composite(raised, DEFAULT_POLICY), DEFAULT_POLICY)
    assert order.index(after) >= order.index(before)


def test_all_weight_on_one_dimension_ignores_the_others() -> None:
    policy = single_dimension_policy(0.5)
    scores = {**dict.fromkeys(DIMENSIONS, 1.0), "reputation": 0.25}
    assert composite(scores, policy) == 0.25


@pytest.mark.parametrize(
    ("until", "envelope", "expected"),
    [
        pytest.param(None, _pay("50.00"), PAID, id="no-hold"),
        pytest.param(2**52, _pay("50.00"), (Action.ESCALATE, "payment_hold"), id="held"),
        pytest.param(2**52, sign_envelope(), SUFFICIENT, id="held-data-still-delivered"),
        pytest.param(1, _pay("50.00"), PAID, id="hold-over"),
    ],
)
def test_a_payment_hold_escalates_payments_only(
    until: int | None, envelope: Envelope, expected: tuple[Action, str]
) -> None:
    ctx = context(_verified(payment_hold_until_ms=until))
    decision = decide(decoded(envelope), ctx, single_dimension_policy(ESTABLISHED),
                      envelope.created_at)  # fmt: skip
    assert (decision.action, decision.reasons[0]) == expected
    assert decision.payment_hold is (until is not None and until > envelope.created_at)


@pytest.mark.parametrize(
    ("failures", "envelope", "expected"),
    [
        pytest.param(0.0, _pay("50.00"), PAID, id="clean-record"),
        pytest.param(4.0, _pay("50.00"), (Action.ESCALATE, "negative_record"),
                     id="record-worse-than-none"),
        pytest.param(4.0, sign_envelope(), SUFFICIENT, id="data-still-delivered"),
    ],
)  # fmt: skip
def test_money_from_a_sender_whose_record_is_worse_than_none_waits_for_a_human(
    failures: float, envelope: Envelope, expected: tuple[Action, str]
) -> None:
    from broker.core.state import DecayedCount

    from .factories import NOW, bond

    # Identity, a custodian's bond and settled behaviour keep this sender established with
    # no reputation at all; its verified failures still keep its money from moving alone.
    state = _verified(bond=bond(), clean_streak=50, failures=DecayedCount(failures, NOW))
    decision = decide(decoded(envelope), context(state), DEFAULT_POLICY, envelope.created_at)
    assert decision.tier is Tier.ESTABLISHED
    assert (decision.action, decision.reasons[0]) == expected
