"""Reputation, behaviour and stake resist manipulation: each attack fails, on the real
Redis and RabbitMQ, through the real router."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.agreements import make_vouch
from broker.core.envelope import Envelope
from broker.core.evidence import sign_evidence
from broker.core.identity import AgentKey
from broker.core.policy import BehaviorModel, Gates, Policy
from broker.ops.reading import read_blocked, read_escalations
from broker.ops.sweeper import run_sweeper
from broker.peerview import describe_peer
from broker.router import Router
from broker.store.redis import RedisStore
from tests.integration.conftest import Agent, AgentFactory
from tests.integration.trust import add_history, make_level, post_bond, verify_identity

DAY_MS = 86_400_000
MINUTE_MS = 60_000


async def reputation(store: RedisStore, did: str) -> float:
    view = await describe_peer(store, did, wall_clock_ms())
    return float(view["dimensions"]["reputation"])


async def blocked_reasons(config: BrokerConfig, count: int, timeout: float = 6.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        entries = await read_blocked(config, limit=count + 20, idle_timeout=0.4)
        if len(entries) >= count or time.monotonic() > deadline:
            return [entry.record["reason"] for entry in entries]


async def deliver(sender: Agent, recipient: Agent, n: int = 1) -> list[Envelope]:
    """n messages from sender that reach recipient; returns the received envelopes."""
    for i in range(n):
        await sender.send(recipient, {"i": i})
    received = [r.envelope for r in await recipient.receive_all(timeout=1.5)]
    assert len(received) == n
    return received


async def test_only_the_recipient_may_report_and_only_once(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    subject, recipient, bystander = await agents(), await agents(), await agents()
    issuer = AgentKey.generate()
    for agent in (subject, recipient, bystander):
        await make_level(store, agent.client, issuer, "established")
    [message] = await deliver(subject, recipient)
    before = await reputation(store, subject.did)

    await bystander.client.report(message, "failure")  # not the recipient
    await asyncio.sleep(0.5)
    assert await reputation(store, subject.did) == pytest.approx(before)

    await recipient.client.report(message, "failure")
    await recipient.client.report(message, "failure")  # twice
    reasons = await blocked_reasons(config, 2)
    assert sorted(reasons) == ["report_duplicate", "report_not_recipient"]
    # Exactly one verified failure, weighted by the reporter's standing (its non-report
    # evidence): a verified identity (0.9) and 10 clean messages of behaviour
    # (1 - 0.5 e^-2), weighted 0.30 and 0.15, no stake: 0.745, so (0.745 - 0.5) / 0.3 =
    # 0.82 units, weighed against the subject's 10 successes (/ (1 + 10/11)), x 0.85 **
    # that overall and again in its domain (a data message, which is also what `peer`
    # scores).
    standing = (0.30 * 0.9 + 0.15 * (1 - 0.5 * math.exp(-2))) / 0.55
    units = (standing - 0.5) / 0.3 / (1 + 10 / 11)
    after = await reputation(store, subject.did)
    assert after == pytest.approx(before * 0.85**units * 0.85**units, rel=0.02)
    payments = await store.peer(subject.did, wall_clock_ms(), cached=False)
    assert set(payments.domain_failures) == {"data"}


async def test_reports_from_unverified_reporters_count_for_nothing(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    subject, sybil = await agents(), await agents()
    await make_level(store, subject.client, AgentKey.generate(), "established")
    [message] = await deliver(subject, sybil)
    before = await reputation(store, subject.did)
    await sybil.client.report(message, "hallucination", severity="critical")
    await asyncio.sleep(0.6)
    assert await reputation(store, subject.did) == pytest.approx(before)


async def test_one_colluding_counterparty_cannot_farm_reputation(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    newcomer, colluder = await agents(), await agents()
    await verify_identity(store, newcomer.client, AgentKey.generate())
    await make_level(store, colluder.client, AgentKey.generate(), "trusted")
    messages = await deliver(newcomer, colluder, 15)
    for message in messages:
        await colluder.client.report(message, "success")
    await asyncio.sleep(1.0)
    now = wall_clock_ms()
    peer = await store.peer(newcomer.did, now, cached=False)
    # 15 reported successes, but one counterparty adds at most pair_success_cap = 3.
    assert peer.successes.at(now, 30 * DAY_MS) == pytest.approx(3.0, abs=0.05)
    assert await reputation(store, newcomer.did) < 0.45


async def test_a_ring_of_twenty_fresh_identities_vouching_for_each_other_gains_nothing(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    ring = [await agents() for _ in range(20)]
    now = wall_clock_ms()
    for i, agent in enumerate(ring):
        for other in (ring[(i + 1) % 20], ring[(i + 7) % 20]):
            vouch = make_vouch(agent.key, other.did, share=1.0, now_ms=now, ttl_ms=DAY_MS)
            assert (await agent.client.present(vouch))["refused"] == []
    scores = [await reputation(store, agent.did) for agent in ring]
    assert scores == [pytest.approx(0.25)] * 20


async def test_a_trusted_voucher_lends_a_bounded_share_and_pays_when_the_vouchee_is_slashed(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    voucher, vouchee, victim = await agents(), await agents(), await agents()
    issuer = AgentKey.generate()
    await make_level(store, voucher.client, issuer, "trusted")
    await make_level(store, victim.client, issuer, "trusted")
    await verify_identity(store, vouchee.client, issuer)
    before = await reputation(store, vouchee.did)
    vouch = make_vouch(voucher.key, vouchee.did, share=1.0, now_ms=wall_clock_ms(), ttl_ms=DAY_MS)
    await voucher.client.present(vouch)
    lifted = await reputation(store, vouchee.did)
    assert before < lifted <= before + 0.15 + 1e-9  # max_boost bounds what any vouches lend

    voucher_before = await reputation(store, voucher.did)
    [message] = await deliver(vouchee, victim)
    await victim.client.report(message, "policy_violation", severity="high")
    await asyncio.sleep(1.0)
    assert await reputation(store, voucher.did) < voucher_before


async def test_whitewashing_a_slashed_key_starts_at_the_cold_start_prior(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    cheat, victim, other_victim = await agents(), await agents(), await agents()
    issuer = AgentKey.generate()
    await make_level(store, cheat.client, issuer, "established")
    for reporter in (victim, other_victim):  # two organisations: corroborated
        await make_level(store, reporter.client, issuer, "trusted")
        [message] = await deliver(cheat, reporter)
        await reporter.client.report(message, "hallucination", severity="critical")
    await asyncio.sleep(0.8)
    slashed = await reputation(store, cheat.did)
    fresh = await agents()
    fresh_view = await describe_peer(store, fresh.did, wall_clock_ms())
    assert slashed < 0.25
    assert fresh_view["dimensions"]["reputation"] == pytest.approx(0.25)
    assert fresh_view["tier"] == "blocked"


async def test_bait_and_switch_drops_below_the_payment_tier_after_two_independent_reports(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    from broker.core.envelope import PaymentIntent

    switcher, victim, other_victim = await agents(), await agents(), await agents()
    issuer = AgentKey.generate()
    await make_level(store, switcher.client, issuer, "trusted")
    await make_level(store, victim.client, issuer, "trusted")
    await make_level(store, other_victim.client, issuer, "trusted")
    assert (await describe_peer(store, switcher.did, wall_clock_ms()))["tier"] == "trusted"
    for reporter in (other_victim, victim):
        [message] = await deliver(switcher, reporter, 1)
        await reporter.client.report(message, "hallucination", severity="critical")
    await asyncio.sleep(1.0)
    view = await describe_peer(store, switcher.did, wall_clock_ms())
    assert view["composite"] < 0.60, view
    pay = PaymentIntent(currency="USD", amount="50.00")
    await switcher.send(victim, {"pay": 1}, kind="payment", payment=pay)
    assert await victim.receive_all(timeout=1.0) == []
    assert await read_escalations(config) == []  # blocked outright, not escalated


async def test_a_flood_of_new_identities_cannot_evict_a_penalty(
    config: BrokerConfig, store: RedisStore, agents: AgentFactory, broker_key: AgentKey
) -> None:
    from broker.app import open_store

    small = replace(config, cache_size=50)
    router_store = open_store(small)
    router = Router(small, router_store, broker_key=broker_key, sweeper=run_sweeper)
    await router.start()
    try:
        offender, victim, witness = await agents(), await agents(), await agents()
        issuer = AgentKey.generate()
        await make_level(store, offender.client, issuer, "established")
        for reporter in (witness, victim):
            await make_level(store, reporter.client, issuer, "trusted")
            [message] = await deliver(offender, reporter)
            await reporter.client.report(message, "hallucination", severity="critical")
        await asyncio.sleep(0.8)
        penalised = await reputation(store, offender.did)
        flood = [AgentKey.generate() for _ in range(300)]
        for key in flood:  # 300 fresh ids through the router's 50-entry cache
            await router_store.peer(key.did, wall_clock_ms())
        assert await reputation(store, offender.did) == pytest.approx(penalised)
        await offender.send(victim, {"after": "flood"})
        assert await victim.receive_all(timeout=1.0) == []
    finally:
        await router.stop()
        await router_store.close()


async def test_repeated_gate_failures_put_a_sender_under_observation(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    prober, victim = await agents(), await agents()
    await make_level(store, prober.client, AgentKey.generate(), "established")
    for _ in range(5):  # probing for agents that do not exist
        await prober.send(AgentKey.generate().did, {"probe": True})
    await blocked_reasons(config, 5)
    view = await describe_peer(store, prober.did, wall_clock_ms())
    assert view["dimensions"]["behavioral"] == 0.0
    assert "under_observation" in view["reasons"]["behavioral"]
    await prober.send(victim, {"now": "blocked"})
    assert await victim.receive_all(timeout=1.0) == []


async def test_a_payload_far_larger_than_usual_is_an_anomaly(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    sender, recipient = await agents(), await agents()
    await make_level(store, sender.client, AgentKey.generate(), "established")
    await deliver(sender, recipient, 10)
    await sender.send(recipient, {"blob": "x" * 100_000})
    await recipient.receive_all(timeout=1.0)
    view = await describe_peer(store, sender.did, wall_clock_ms())
    assert "under_observation" in view["reasons"]["behavioral"]


async def test_an_issuer_slashes_a_bond_and_the_stake_dimension_falls(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    agent = await agents()
    issuer, custodian = AgentKey.generate(), AgentKey.generate()
    await verify_identity(store, agent.client, issuer)
    await post_bond(store, agent.client, custodian, 1_000)
    assert (await describe_peer(store, agent.did, wall_clock_ms()))["dimensions"]["stake"] == 1.0
    now = wall_clock_ms()
    slash = sign_evidence(
        custodian, "slash", id="slash-1", subject=agent.did, condition="fraud",
        amount_minor=75_000, issued_at=now - 1, expires_at=now + DAY_MS,
    )  # fmt: skip
    untrusted = sign_evidence(
        AgentKey.generate(), "slash", id="slash-2", subject=agent.did, condition="fraud",
        amount_minor=25_000, issued_at=now - 1, expires_at=now + DAY_MS,
    )  # fmt: skip
    reply = await agent.client.present(slash, untrusted, slash)
    assert reply["accepted"] == ["slash-1"]
    assert [r["code"] for r in reply["refused"]] == ["slash_issuer_untrusted", "slash_duplicate"]
    view = await describe_peer(store, agent.did, wall_clock_ms())
    assert view["dimensions"]["stake"] == pytest.approx(0.25)


async def test_success_reports_raise_reputation_with_diminishing_returns(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    subject = await agents()
    await verify_identity(store, subject.client, AgentKey.generate())
    gains = []
    for _ in range(3):
        reporter = await agents()
        await make_level(store, reporter.client, AgentKey.generate(), "trusted")
        messages = await deliver(subject, reporter, 3)
        before = await reputation(store, subject.did)
        for message in messages:
            await reporter.client.report(message, "success")
        await asyncio.sleep(0.8)
        gains.append(await reputation(store, subject.did) - before)
    assert gains[0] > gains[1] > gains[2] > 0
    await add_history(store, subject.did, 0)


async def send_many(sender: Agent, recipient: Agent, n: int) -> list[str]:
    """n messages from sender; returns their ids."""
    return [(await sender.send(recipient, {"i": i})).id for i in range(n)]


async def decision_log(store: RedisStore, count: int, timeout: float = 6.0) -> dict[str, Any]:
    """Decision log entries by message id, once `count` are written (each message's
    finish step, which also runs the behaviour detectors, has then run)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = await store.recent_decisions(limit=count + 20)
        if len(entries) >= count or time.monotonic() > deadline:
            return {entry["id"]: entry for entry in entries}
        await asyncio.sleep(0.05)


async def test_a_burst_far_above_the_senders_own_per_minute_rate_puts_it_under_observation(
    config: BrokerConfig, store: RedisStore, agents: AgentFactory, broker_key: AgentKey
) -> None:
    from broker.app import open_store

    # A lower floor keeps the burst small. Agents stamp envelopes with the wall clock while
    # the router's clock jumps ahead by whole minutes, so the skew gate must allow that.
    behavior = BehaviorModel(rate_floor_per_minute=10, baseline_minutes=2)
    await store.save_policy(Policy(behavior=behavior, gates=Gates(max_clock_skew_ms=3_600_000)))
    now = [-(-wall_clock_ms() // MINUTE_MS) * MINUTE_MS]  # the start of the next minute
    router_store = open_store(config)
    router = Router(
        config, router_store, clock=lambda: now[0], broker_key=broker_key, sweeper=run_sweeper
    )
    await router.start()
    raw = aioredis.Redis.from_url(config.redis_url)
    try:
        spiker, edge, newcomer, recipient = [await agents() for _ in range(4)]
        issuer = AgentKey.generate()
        for agent in (spiker, edge, newcomer):
            await make_level(store, agent.client, issuer, "established")
        # A burst before baseline_minutes of history is not judged: no baseline yet.
        sent = await send_many(newcomer, recipient, 16)
        for _ in range(behavior.baseline_minutes):  # the baseline: 3 a minute each
            baseline = await send_many(spiker, recipient, 3)
            sent += baseline + await send_many(edge, recipient, 3)
            await decision_log(store, len(sent))
            now[0] += MINUTE_MS
        # The limit is now max(floor 10, factor 5 x EWMA 3) = 15 in a minute: `edge` sends
        # exactly that many, `spiker` one more. All of them were decided before the finish
        # step that trips the detector, so all still go out at the earlier tier.
        spike_minute = now[0]
        at_limit = await send_many(edge, recipient, 15)
        burst = await send_many(spiker, recipient, 16)
        sent += at_limit + burst
        log = await decision_log(store, len(sent))
        assert {(log[i]["action"], log[i]["tier"]) for i in at_limit + burst} == {
            ("deliver", "established")
        }

        now[0] += MINUTE_MS
        [after_burst] = await send_many(spiker, recipient, 1)
        [after_limit] = await send_many(edge, recipient, 1)
        log = await decision_log(store, len(sent) + 2)
        spiked, at_edge, unjudged = [
            await raw.hgetall(store.keys.peer(agent.did)) for agent in (spiker, edge, newcomer)
        ]
    finally:
        await raw.aclose()
        await router.stop()
        await router_store.close()

    assert spiked.get(b"anomaly_reason") == b"velocity_spike"
    assert int(spiked[b"anomaly"]) == spike_minute
    assert b"anomaly" not in at_edge
    assert b"anomaly" not in unjudged
    # Under observation the behavioral dimension is 0, and the anomaly voids the earlier
    # proof of key possession too: the spiker falls from established to blocked.
    before, after = log[baseline[-1]], log[after_burst]
    assert (before["action"], before["tier"]) == ("deliver", "established")
    assert before["dims"]["behavioral"] > 0.9
    assert (after["action"], after["tier"]) == ("block", "blocked")
    assert after["dims"]["behavioral"] == 0.0
    assert after["dims"]["identity"] == pytest.approx(0.2)
    assert "under_observation" in after["reasons"]
    assert (log[after_limit]["action"], log[after_limit]["tier"]) == ("deliver", "established")
    assert log[after_limit]["dims"]["behavioral"] > 0.9


async def test_a_late_finish_from_the_previous_minute_does_not_reopen_it(
    store: RedisStore,
) -> None:
    """Concurrent decisions finish slightly out of order around a minute boundary: the
    straggler counts in the current minute; it must not fold a partial minute into the
    baseline, add a minute of history or reset the current count."""
    from broker.store.claims import Finish
    from tests.unit.factories import sign_envelope

    sender = AgentKey.generate()
    policy = Policy()
    minute = (wall_clock_ms() // 60_000 + 1) * 60_000

    async def finish(at_ms: int) -> None:
        env = sign_envelope(sender)
        result = Finish("deliver", True, True, 100, False, False, trace_id="ab" * 16)
        await store.finish(env, "d", result, policy, at_ms)

    for _ in range(3):
        await finish(minute + 1_000)
    await finish(minute + 60_001)  # the next minute starts
    await finish(minute + 59_999)  # a straggler from the one before
    await finish(minute + 60_002)
    fields = await store._redis.hgetall(store.keys.peer(sender.did))
    assert fields[b"rate_minutes"] == b"1"  # one completed minute, not three
    assert float(fields[b"rate_ewma"]) == 3.0  # that minute's full count
    assert fields[b"rate_n"] == b"3"  # the current minute kept counting (straggler included)
