"""Vouching (broker/core/scoring/reputation.py vouch_boost): what valid vouches lend.

The rule: each valid vouch lends min(share, max_share) x (voucher's earned reputation -
prior), the sum capped at max_boost. Earned reputation, with the defaults (prior 0.25,
ceiling 0.90, half saturation 11, failure multiplier 0.85), is
0.25 + 0.65 x s / (s + 11), times 0.85 ** (f / (1 + s / 11)). With 33 successes and no
failure that is 0.25 + 0.65 x 0.75 = 0.7375, so it lends 0.4875 x share.
"""

from __future__ import annotations

from typing import Any

import pytest

from broker.core.identity import AgentKey
from broker.core.policy import Policy, load_policy
from broker.core.scoring.reputation import score_reputation, vouch_boost
from broker.core.state import DecayedCount, Vouch
from tests.unit.factories import (
    DAY_MS,
    NOW,
    SENDER,
    UNTRUSTED_ISSUER,
    context,
    credential,
    peer,
    sign_envelope,
)

VOUCHER = AgentKey(bytes([21]) * 32).did
OTHER_VOUCHER = AgentKey(bytes([22]) * 32).did
DEFAULT = Policy()


def vouch(voucher: str = VOUCHER, *, successes: float = 33.0, **overrides: Any) -> Vouch:
    """A vouch from an issuer-verified `voucher` with `successes` as of NOW, valid a day."""
    fields: dict[str, Any] = {
        "voucher": voucher,
        "share": 0.2,
        "expires_at_ms": NOW + DAY_MS,
        "voucher_successes": DecayedCount(successes, NOW),
        "voucher_credential": credential(subject=voucher, credential_id=f"cred-{voucher[-6:]}"),
    }
    fields.update(overrides)
    return Vouch(**fields)


@pytest.mark.parametrize(
    ("vouches", "boost"),
    [
        ((), 0.0),
        ((vouch(),), 0.4875 * 0.2),
        ((vouch(share=0.1),), 0.4875 * 0.1),
        ((vouch(share=0.0),), 0.0),
        ((vouch(share=0.3),), 0.4875 * 0.3),  # 0.14625, just under the 0.15 cap
        ((vouch(share=0.4),), 0.15),  # 0.195, capped at max_boost
        ((vouch(), vouch(OTHER_VOUCHER, share=0.1)), 0.4875 * 0.3),  # vouches add up
        ((vouch(share=0.2), vouch(OTHER_VOUCHER, share=0.2)), 0.15),  # the sum is capped
        # 99 successes: 0.25 + 0.65 x 0.9 = 0.835; lends 0.585 x 0.2.
        ((vouch(successes=99.0),), 0.585 * 0.2),
        # One failure: 0.7375 x 0.85 ** (1 / 4) = 0.708138...; lends 0.458138 x 0.2.
        ((vouch(voucher_failures=DecayedCount(1.0, NOW)),), (0.7375 * 0.85**0.25 - 0.25) * 0.2),
        # Successes decay by time: 66 a success half-life (30 days) ago are 33 now.
        ((vouch(voucher_successes=DecayedCount(66.0, NOW - 30 * DAY_MS)),), 0.4875 * 0.2),
    ],
    ids=["none", "one", "smaller-share", "zero-share", "under-cap", "capped", "two-add",
         "two-capped", "long-record", "a-failure", "decayed"],
)  # fmt: skip
def test_a_valid_vouch_lends_a_share_of_the_vouchers_standing(
    vouches: tuple[Vouch, ...], boost: float
) -> None:
    ctx = context(peer(vouches=vouches))
    assert vouch_boost(vouches, ctx, DEFAULT, NOW) == pytest.approx(boost)


@pytest.mark.parametrize(
    "invalid",
    [
        vouch(expires_at_ms=NOW),  # expiry is exclusive
        vouch(expires_at_ms=NOW - 1),
        vouch(voucher_revoked=True),
        vouch(SENDER.did, voucher_credential=credential()),  # nobody vouches for itself
        vouch(voucher_credential=None),  # only issuer-verified peers vouch
        vouch(voucher_credential=credential(subject=VOUCHER, issuer=UNTRUSTED_ISSUER)),
        vouch(voucher_credential=credential()),  # a credential for someone else
        vouch(voucher_credential=credential(subject=VOUCHER, expires_at_ms=NOW)),
        vouch(successes=11.0),  # 0.25 + 0.65 x 0.5 = 0.575, under the 0.60 minimum
        vouch(successes=0.0),  # a fresh identity lends nothing
    ],
    ids=["expired-now", "expired", "revoked", "self", "no-credential", "untrusted-issuer",
         "credential-mismatch", "credential-expired", "below-minimum", "fresh"],
)  # fmt: skip
def test_an_invalid_vouch_lends_nothing(invalid: Vouch) -> None:
    vouches = (invalid,)
    assert vouch_boost(vouches, context(peer(vouches=vouches)), DEFAULT, NOW) == 0.0


def test_an_invalid_vouch_takes_nothing_from_a_valid_one() -> None:
    vouches = (vouch(voucher_revoked=True, share=1.0), vouch(OTHER_VOUCHER))
    assert vouch_boost(vouches, context(peer(vouches=vouches)), DEFAULT, NOW) == pytest.approx(
        0.4875 * 0.2
    )


def test_a_revoked_voucher_credential_lends_nothing() -> None:
    vouches = (vouch(),)
    revoked = context(peer(vouches=vouches), revoked_evidence=frozenset({f"cred-{VOUCHER[-6:]}"}))
    assert vouch_boost(vouches, revoked, DEFAULT, NOW) == 0.0


@pytest.mark.parametrize(
    ("rules", "share", "boost"),
    [
        ({"max_share": 0.5, "max_boost": 1.0}, 0.8, 0.4875 * 0.5),  # share capped at 0.5
        ({"max_share": 1.0, "max_boost": 1.0}, 0.8, 0.4875 * 0.8),
        ({"max_boost": 0.05}, 0.2, 0.05),
        ({"min_voucher_reputation": 0.5}, 0.2, 0.325 * 0.2),  # 11 successes now enough
        ({"min_voucher_reputation": 0.58}, 0.2, 0.0),
    ],
)
def test_the_policy_bounds_share_boost_and_voucher_standing(
    rules: dict[str, float], share: float, boost: float
) -> None:
    policy = load_policy({"vouching": rules})
    successes = 11.0 if "min_voucher_reputation" in rules else 33.0
    vouches = (vouch(share=share, successes=successes),)
    assert vouch_boost(vouches, context(peer(vouches=vouches)), policy, NOW) == pytest.approx(
        boost
    )


def test_a_vouch_raises_the_vouchees_reputation_and_says_so() -> None:
    vouches = (vouch(),)
    env = sign_envelope()
    alone = score_reputation(env, context(peer()), DEFAULT, NOW)
    vouched = score_reputation(env, context(peer(vouches=vouches)), DEFAULT, NOW)
    assert alone.score == pytest.approx(0.25)  # the cold-start prior
    assert vouched.score == pytest.approx(0.25 + 0.4875 * 0.2)
    assert "vouched" in vouched.reasons and "vouched" not in alone.reasons


def test_a_vouch_never_lifts_reputation_above_the_ceiling() -> None:
    # 990 own successes: 0.25 + 0.65 x 990 / 1001 = 0.892857..., 0.007 under the ceiling.
    vouches = (vouch(share=0.3),)
    veteran = peer(vouches=vouches, successes=DecayedCount(990.0, NOW))
    result = score_reputation(sign_envelope(), context(veteran), DEFAULT, NOW)
    assert result.score == pytest.approx(0.90)
    assert "vouched" in result.reasons
