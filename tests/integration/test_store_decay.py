"""The decay rule is broker/core/state.py's DecayedCount; the scripts that fold it into Redis
atomically (lua/decay.lua, run by add_decayed.lua and count_report.lua) must fold exactly as
it does. A table of counts, instants and clocks against the real Redis."""

from __future__ import annotations

from dataclasses import replace

import pytest

from broker.core.policy import Policy
from broker.core.report_effects import CountReport
from broker.core.state import DecayedCount, Vouch
from broker.store import codec
from broker.store.redis import RedisStore

pytestmark = pytest.mark.integration

NOW = 1_800_000_000_000
HALF = Policy().reputation.success_half_life_ms

# (stored count or None for a peer with none, amount added, now)
CASES = [
    pytest.param(None, 1.0, NOW, id="nothing-stored-yet"),
    pytest.param(DecayedCount(8.0, NOW - HALF), 1.0, NOW, id="one-half-life-ago"),
    pytest.param(DecayedCount(8.0, NOW - 3 * HALF), 0.5, NOW, id="three-half-lives-ago"),
    pytest.param(DecayedCount(3.7, NOW - 12_345_678), 0.25, NOW, id="a-fraction-of-one"),
    pytest.param(DecayedCount(8.0, NOW), 1.0, NOW, id="same-instant"),
    pytest.param(DecayedCount(8.0, NOW + HALF), 1.0, NOW, id="stored-after-now-never-grows"),
    pytest.param(DecayedCount(1e-9, NOW - 40 * HALF), 2.0, NOW, id="decayed-to-nothing"),
]


async def _stored(store: RedisStore, did: str, count: DecayedCount | None) -> None:
    if count is not None:
        fields = {codec.SUCCESS_VALUE: repr(count.value), codec.SUCCESS_AT: str(count.as_of_ms)}
        await store._redis.hset(store.keys.peer(did), mapping=fields)  # type: ignore[arg-type]


async def _read(store: RedisStore, did: str) -> DecayedCount:
    return (await store.peer(did, NOW, cached=False)).successes


@pytest.mark.parametrize(("count", "amount", "now"), CASES)
async def test_redis_folds_an_outcome_as_decayed_count_adds_it(
    store: RedisStore, count: DecayedCount | None, amount: float, now: int
) -> None:
    did = "did:key:decay-outcome"
    await _stored(store, did, count)
    expected = (count or DecayedCount()).add(amount, now, HALF)
    value = await store.add_outcome(did, success=True, weight=amount, now_ms=now, policy=Policy())
    stored = await _read(store, did)
    # Lua prints a number with 14 significant digits.
    assert value == pytest.approx(expected.value, rel=1e-13)
    assert stored.value == pytest.approx(expected.value, rel=1e-13)
    assert stored.as_of_ms == expected.as_of_ms


@pytest.mark.parametrize(("count", "amount", "now"), CASES)
async def test_a_capped_add_folds_each_count_as_decayed_count_adds_it(
    store: RedisStore, count: DecayedCount | None, amount: float, now: int
) -> None:
    did = "did:key:decay-capped"
    await _stored(store, did, count)
    expected = (count or DecayedCount()).add(amount, now, HALF)
    praise = CountReport(praise=True, amount=amount, half_life_ms=HALF, cap=1e9)
    added = await store.count_report(did, "org", praise, Policy(), now)
    stored = await _read(store, did)
    assert added == amount  # far under the cap
    assert stored.value == pytest.approx(expected.value, rel=1e-13)
    assert stored.as_of_ms == expected.as_of_ms


async def test_a_counterpartys_allowance_decays_by_the_same_rule(store: RedisStore) -> None:
    did, cap = "did:key:decay-allowance", 10.0
    ask = CountReport(praise=True, amount=10.0, half_life_ms=HALF, cap=cap)
    assert await store.count_report(did, "org", ask, Policy(), NOW - HALF) == 10.0
    # One half-life on, half the allowance is used: 5 is left, however much is asked for.
    used = DecayedCount(10.0, NOW - HALF).at(NOW, HALF)
    left = await store.count_report(did, "org", replace(ask, amount=8.0), Policy(), NOW)
    assert left == pytest.approx(cap - used, rel=1e-13)


async def test_blame_bills_the_unexpired_vouchers_in_the_same_step(store: RedisStore) -> None:
    policy = Policy()
    subject = "did:key:decay-vouchee"
    vouchers = {"did:key:decay-voucher": NOW + HALF, "did:key:decay-lapsed": NOW - 1}
    for number, (voucher, expires) in enumerate(vouchers.items()):
        vouch = Vouch(voucher, share=0.5, expires_at_ms=expires)
        assert (
            await store.add_vouch(subject, vouch, issued=(NOW - 10 + number, f"v{number}")) == "ok"
        )
    blame = CountReport(
        praise=False, amount=2.0, half_life_ms=policy.reputation.failure_half_life_ms,
        cap=policy.reports.pair_failure_cap, domain="payment",
    )  # fmt: skip
    added = await store.count_report(subject, "org-a", blame, policy, NOW)
    # Two counts (all failures and payment failures) share the organisation's allowance.
    assert added == pytest.approx(min(2.0, policy.reports.pair_failure_cap / 2), rel=1e-13)
    peer = await store.peer(subject, NOW, cached=False)
    assert peer.failures.value == pytest.approx(added, rel=1e-13)
    assert peer.domain_failures["payment"].value == pytest.approx(added, rel=1e-13)
    rate = min(0.5, policy.vouching.max_share) * policy.vouching.liability
    billed = await store.peer("did:key:decay-voucher", NOW, cached=False)
    lapsed = await store.peer("did:key:decay-lapsed", NOW, cached=False)
    assert billed.failures.value == pytest.approx(added * rate, rel=1e-12)
    assert lapsed.failures.value == 0.0
