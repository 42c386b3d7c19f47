"""Trust cannot be manufactured (issue 10): each finding of the attack review, replayed
through the real router on real RabbitMQ and Redis, using only what an attacker has:
its own keys, its own provisioned AMQP logins, and the documented SDK."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson
import pytest

from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.agreements import make_manifest
from broker.core.envelope import PaymentIntent
from broker.core.evidence import sign_evidence
from broker.core.identity import AgentKey
from broker.core.policy import load_policy
from broker.ops.reading import read_blocked, read_escalations
from broker.peerview import describe_peer
from broker.router import Router
from broker.store.redis import RedisStore
from tests.integration.conftest import Agent, AgentFactory
from tests.integration.trust import make_level, trust_issuer, verify_identity

DAY_MS = 86_400_000


def self_made_bond(
    key: AgentKey, major: int = 10**13, *, expires_in_ms: int = DAY_MS
) -> dict[str, Any]:
    """A bond the agent signs for itself: anyone can mint this."""
    now = wall_clock_ms()
    return sign_evidence(
        key, "bond", id=f"bond-{os.urandom(6).hex()}", subject=key.did,
        amount_minor=major * 100, currency="USD", issued_at=now - 1000,
        expires_at=now + expires_in_ms,
    )  # fmt: skip


def self_manifest(key: AgentKey, kinds: list[str], *, ttl_ms: int = DAY_MS) -> dict[str, Any]:
    """A capability manifest: self-declared by definition."""
    return make_manifest(
        key, now_ms=wall_clock_ms() - 1, ttl_ms=ttl_ms, kinds=kinds, retention="ephemeral"
    )


async def view(store: RedisStore, did: str) -> dict[str, Any]:
    return await describe_peer(store, did, wall_clock_ms())


async def delivered(recipient: Agent, timeout: float = 1.5) -> list[Any]:
    return await recipient.receive_all(timeout=timeout)


async def record_of(config: BrokerConfig, message_id: str, timeout: float = 8.0) -> dict[str, Any]:
    """The blocked-stream or escalation record of one message, once it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in await read_blocked(config, limit=2000, idle_timeout=0.3):
            if entry.record["message_id"] == message_id:
                return dict(entry.record)
        for record in await read_escalations(config, limit=500):
            if record["message_id"] == message_id:
                return dict(record)
    raise AssertionError(f"no record of {message_id}")


async def wait_for(predicate: Any, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.1)


# -- 1. self-issued stake --------------------------------------------------------------


async def test_a_bond_the_agent_signs_for_itself_is_refused_and_never_counts(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    agent = await agents()
    await agent.client.handshake()
    before = await view(store, agent.did)
    reply = await agent.client.present(self_made_bond(agent.key))
    assert reply["accepted"] == []
    assert [r["code"] for r in reply["refused"]] == ["evidence_self_issued"]
    after = await view(store, agent.did)
    assert after["dimensions"]["stake"] == 0.0
    assert after["composite"] == pytest.approx(before["composite"])


async def test_a_bond_from_an_issuer_not_trusted_for_stake_never_counts(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    agent = await agents()
    identity_issuer, stranger = AgentKey.generate(), AgentKey.generate()
    await verify_identity(store, agent.client, identity_issuer)
    now = wall_clock_ms()

    def bond(issuer: AgentKey) -> dict[str, Any]:
        return sign_evidence(
            issuer, "bond", id=f"bond-{os.urandom(6).hex()}", subject=agent.did,
            amount_minor=10**15, currency="USD", issued_at=now - 1000, expires_at=now + DAY_MS,
        )  # fmt: skip

    # Neither a stranger nor an issuer trusted only for identity may post collateral.
    reply = await agent.client.present(bond(stranger), bond(identity_issuer))
    assert [r["code"] for r in reply["refused"]] == ["evidence_issuer_untrusted"] * 2
    assert (await view(store, agent.did))["dimensions"]["stake"] == 0.0
    # The stored bond of a custodian records who issued it, so removing the custodian
    # from the trust list takes the stake away on the next decision.
    custodian = AgentKey.generate()
    await trust_issuer(store, custodian.did, "stake")
    assert (await agent.client.present(bond(custodian)))["refused"] == []
    assert (await view(store, agent.did))["dimensions"]["stake"] == 1.0
    await store.remove_issuer(custodian.did)
    stake = await view(store, agent.did)
    assert stake["dimensions"]["stake"] == 0.0
    assert "stake_issuer_untrusted" in stake["reasons"]["stake"]


# -- 2. sybil ring ----------------------------------------------------------------------


async def test_a_sybil_ring_with_self_made_evidence_never_reaches_probation(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    ring = [await agents() for _ in range(10)]
    for member in ring:
        await member.client.handshake()
        await member.client.present(
            self_manifest(member.key, ["data", "request", "report"]), self_made_bond(member.key)
        )
    # Warm-up: 15 messages each around the ring (150 in all).
    sent: list[str] = []
    for round_ in range(15):
        for i, member in enumerate(ring):
            sent.append((await member.send(ring[(i + 1) % 10], {"warm": round_})).id)
    got = {member.did: await delivered(member, timeout=1.0) for member in ring}
    # The ring reports "success" about everything it received, 180 reports and more.
    for member in ring:
        for received in got[member.did]:
            await member.client.report(received.envelope, "success")
    await asyncio.sleep(1.0)
    assert [r for items in got.values() for r in items] == [], (
        "a ring member with self-made evidence had a message delivered"
    )
    for member in ring:
        shown = await view(store, member.did)
        assert shown["tier"] == "blocked", shown
        assert shown["composite"] < 0.50, shown
        assert shown["dimensions"]["reputation"] == pytest.approx(0.25)
    record = await record_of(config, sent[-1])
    assert record["decision"]["action"] == "block"


async def test_a_ring_of_verified_agents_cannot_raise_each_other_past_one_counterparty(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    """Ring members with real identity credentials from one organisation: their reports
    about each other count as one counterparty, whatever their number."""
    issuer = AgentKey.generate()
    ring = [await agents() for _ in range(6)]
    for member in ring:
        await verify_identity(store, member.client, issuer, organisation="Ring Ltd")
    target = ring[0]
    for reporter in ring[1:]:
        for _ in range(6):
            await target.send(reporter, {"job": 1})
    for reporter in ring[1:]:
        for received in await delivered(reporter, timeout=1.0):
            await reporter.client.report(received.envelope, "success")
    await asyncio.sleep(1.0)
    # Same organisation as the target: its own organisation's praise counts for nothing.
    assert (await view(store, target.did))["dimensions"]["reputation"] == pytest.approx(0.25)


# -- 3. whitewashing ----------------------------------------------------------------------


async def test_a_fresh_key_with_free_evidence_starts_no_better_than_possession_alone(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    fresh, victim = await agents(), await agents()
    await fresh.client.handshake()
    reply = await fresh.client.present(
        self_manifest(fresh.key, ["data"]), self_made_bond(fresh.key)
    )
    assert len(reply["accepted"]) <= 1  # the manifest may stand (it only narrows)
    for i in range(15):
        await fresh.send(victim, {"warm": i})
    assert await delivered(victim) == []
    shown = await view(store, fresh.did)
    assert shown["tier"] == "blocked"
    # What its own evidence earns: a live proof of possession, nothing else.
    assert shown["dimensions"]["identity"] == pytest.approx(0.40)
    assert shown["dimensions"]["stake"] == 0.0
    assert shown["dimensions"]["compliance"] == pytest.approx(0.50)
    assert shown["dimensions"]["reputation"] == pytest.approx(0.25)


# -- 4. slander -----------------------------------------------------------------------------


async def test_one_slanderer_cannot_take_an_honest_established_peer_below_probation(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    honest, slanderer = await agents(), await agents()
    await make_level(store, honest.client, AgentKey.generate(), "established")
    await make_level(store, slanderer.client, AgentKey.generate(), "trusted")
    start = await view(store, honest.did)
    assert start["tier"] == "established"
    for i in range(10):
        await honest.send(slanderer, {"job": i})
    received = await delivered(slanderer)
    assert len(received) == 10
    for item in received:
        await slanderer.client.report(item.envelope, "failure")
    await asyncio.sleep(1.0)
    after_failures = await view(store, honest.did)
    # Blame from one counterparty is capped like praise.
    assert after_failures["composite"] >= 0.50
    assert after_failures["dimensions"]["reputation"] >= start["dimensions"]["reputation"] * 0.3

    await honest.send(slanderer, {"job": "last"})
    [last] = await delivered(slanderer)
    await slanderer.client.report(last.envelope, "hallucination", severity="critical")
    await asyncio.sleep(1.0)
    after_critical = await view(store, honest.did)
    assert after_critical["tier"] in ("probation", "established"), after_critical
    assert "under_observation" not in after_critical["reasons"]["behavioral"]
    # The uncorroborated critical report waits for a security reviewer.
    pending = await store.serious.list(subject=honest.did)
    assert [item["reporter"] for item in pending] == [slanderer.did]


async def test_a_critical_report_corroborated_by_an_independent_counterparty_acts(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    cheat, first, second = await agents(), await agents(), await agents()
    await make_level(store, cheat.client, AgentKey.generate(), "established")
    await make_level(store, first.client, AgentKey.generate(), "trusted", organisation="One")
    await make_level(store, second.client, AgentKey.generate(), "trusted", organisation="Two")
    for victim in (first, second):
        await cheat.send(victim, {"job": 1})
        [item] = await delivered(victim)
        await victim.client.report(item.envelope, "hallucination", severity="critical")
    await asyncio.sleep(1.0)
    shown = await view(store, cheat.did)
    assert "under_observation" in shown["reasons"]["behavioral"]
    assert shown["tier"] == "blocked"


# -- 5. expired evidence ----------------------------------------------------------------------


async def test_an_expired_bond_stops_counting_at_once(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    agent = await agents()
    await verify_identity(store, agent.client, AgentKey.generate())
    custodian = AgentKey.generate()
    await trust_issuer(store, custodian.did, "stake")
    now = wall_clock_ms()
    bond = sign_evidence(
        custodian, "bond", id=f"bond-{os.urandom(6).hex()}", subject=agent.did,
        amount_minor=500_000, currency="USD", issued_at=now - 1000, expires_at=now + 1500,
    )  # fmt: skip
    assert (await agent.client.present(bond))["refused"] == []
    assert (await view(store, agent.did))["dimensions"]["stake"] == 1.0
    await asyncio.sleep(2.0)
    shown = await view(store, agent.did)
    assert shown["dimensions"]["stake"] == 0.0
    assert "stake_expired" in shown["reasons"]["stake"]


async def test_an_expired_manifest_stops_applying(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    agent, peer = await agents(), await agents()
    await make_level(store, agent.client, AgentKey.generate(), "established")
    assert (await agent.client.present(self_manifest(agent.key, ["data"], ttl_ms=2000)))[
        "refused"
    ] == []
    await agent.send(peer, {"q": 1}, kind="request")
    [first] = await delivered(peer)
    assert "kind_outside_manifest" in first.trust.reasons
    await asyncio.sleep(2.5)
    await agent.send(peer, {"q": 2}, kind="request")
    [second] = await delivered(peer)
    assert "kind_outside_manifest" not in second.trust.reasons
    assert second.trust.dimensions["compliance"] == pytest.approx(0.50)


async def test_a_manifest_never_raises_compliance(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    agent = await agents()
    await verify_identity(store, agent.client, AgentKey.generate())
    before = await view(store, agent.did)
    await agent.client.present(self_manifest(agent.key, ["data", "request"]))
    after = await view(store, agent.did)
    assert after["dimensions"]["compliance"] == pytest.approx(before["dimensions"]["compliance"])


# -- 6. rollback ------------------------------------------------------------------------------


async def test_a_victims_older_manifest_cannot_be_replayed_by_anyone(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    victim, attacker, peer = await agents(), await agents(), await agents()
    await make_level(store, victim.client, AgentKey.generate(), "established")
    older = make_manifest(
        victim.key, now_ms=wall_clock_ms() - 5000, ttl_ms=DAY_MS, kinds=["data"],
        retention="ephemeral",
    )  # fmt: skip
    newer = self_manifest(victim.key, ["data", "request"])
    assert (await victim.client.present(older))["refused"] == []
    assert (await victim.client.present(newer))["refused"] == []

    # The attacker sends the old manifest in a presentation that names nobody ...
    reply = await attacker.client._negotiate({"op": "present", "documents": [older]})
    assert reply.get("op") == "error" or reply.get("accepted") == [], reply
    # ... and in one that names itself.
    reply = await attacker.client._negotiate(
        {"op": "present", "agent": attacker.did, "documents": [older]}
    )
    assert reply.get("op") == "error" or reply.get("accepted") == [], reply
    # The victim itself cannot roll back to the older one either.
    again = await victim.client.present(older)
    assert [r["code"] for r in again["refused"]] == ["evidence_superseded"]

    for i in range(3):
        await victim.send(peer, {"q": i}, kind="request")
    received = await delivered(peer)
    assert len(received) == 3
    assert all("kind_outside_manifest" not in r.trust.reasons for r in received)
    assert "under_observation" not in (await view(store, victim.did))["reasons"]["behavioral"]


async def test_a_document_about_another_agent_is_refused_whatever_fields_are_missing(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    victim, attacker = await agents(), await agents()
    issuer = AgentKey.generate()
    await trust_issuer(store, issuer.did, "identity")
    now = wall_clock_ms()
    victims_credential = sign_evidence(
        issuer, "credential", id=f"cred-{os.urandom(4).hex()}", subject=victim.did,
        organisation="Acme", issued_at=now - 1000, expires_at=now + DAY_MS,
    )  # fmt: skip
    reply = await attacker.client.present(victims_credential)
    assert [r["code"] for r in reply["refused"]] == ["evidence_subject_mismatch"]
    assert (await store.peer(victim.did, wall_clock_ms(), cached=False)).credential is None


# -- 7. money ---------------------------------------------------------------------------------


async def payment_outcome(
    sender: Agent, recipient: Agent, config: BrokerConfig, amount: str, currency: str
) -> tuple[str, str]:
    env = await sender.send(
        recipient, {"pay": amount}, kind="payment",
        payment=PaymentIntent(currency=currency, amount=amount),
    )  # fmt: skip
    for received in await delivered(recipient, timeout=1.0):
        if received.envelope.id == env.id:
            return "deliver", received.trust.reasons[0]
    record = await record_of(config, env.id)
    return record["decision"]["action"], record["reason"]


async def test_the_daily_cap_counts_every_currency_together(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    payer, payee = await agents(), await agents()
    await make_level(store, payer.client, AgentKey.generate(), "established")
    await make_level(store, payee.client, AgentKey.generate(), "established")
    rates = {"USD": "1", "EUR": "1.08", "GBP": "1.27", "CHF": "1.13", "KWD": "3.25"}
    policy = load_policy({"currency": {"reference": "USD", "rates": rates}})
    await store.save_policy(policy, who="test", why="rates")
    await asyncio.sleep(1.2)  # every router follows the change within a second
    outcomes = []
    for currency in ("USD", "EUR", "GBP", "CHF"):
        for _ in range(2):
            outcomes.append(await payment_outcome(payer, payee, config, "60.00", currency))
    # 60 USD + 2 x 64.80 + ... : the 500 USD per day are spent after the 7th payment.
    delivered_total = sum(
        60 * float(rates[c]) for c, (action, _) in zip(
            [c for c in ("USD", "EUR", "GBP", "CHF") for _ in range(2)], outcomes, strict=True
        ) if action == "deliver"
    )  # fmt: skip
    assert delivered_total <= 500.0
    assert outcomes[-1] == ("escalate", "daily_cap_exceeded")


async def test_caps_are_in_the_reference_currency_and_unrated_currencies_escalate(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    payer, payee = await agents(), await agents()
    await make_level(store, payer.client, AgentKey.generate(), "established")
    await make_level(store, payee.client, AgentKey.generate(), "established")
    # Default policy: USD only. A dinar payment has no rate, so no cap can vouch for it.
    assert await payment_outcome(payer, payee, config, "99.000", "KWD") == (
        "escalate", "currency_unrated",
    )  # fmt: skip
    policy = load_policy({"currency": {"reference": "USD", "rates": {"USD": "1", "KWD": "3.25"}}})
    await store.save_policy(policy, who="test", why="rates")
    await asyncio.sleep(1.2)
    # 100 KWD is 325 USD: over the 100 per message established cap.
    assert await payment_outcome(payer, payee, config, "100.000", "KWD") == (
        "escalate", "payment_cap_exceeded",
    )  # fmt: skip
    assert (await payment_outcome(payer, payee, config, "20.000", "KWD"))[0] == "deliver"


# -- the security reviewer's side, from the CLI ------------------------------------------------


async def test_security_confirms_or_dismisses_a_serious_report_from_the_cli(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    from tests.integration.test_cli_flow import cli

    cheat, honest, lone, victim = await agents(), await agents(), await agents(), await agents()
    for agent in (cheat, honest, lone):
        await make_level(store, agent.client, AgentKey.generate(), "established")
    await make_level(store, victim.client, AgentKey.generate(), "trusted")
    for subject, times in ((cheat, 1), (honest, 3), (lone, 1)):
        for job in range(times):
            await subject.send(victim, {"job": job})
            [item] = await delivered(victim)
            await victim.client.report(item.envelope, "hallucination", severity="critical")

    async def all_filed() -> bool:
        items = await store.serious.list()
        return len(items) == 3 and sum(int(i.get("repeats", 0)) for i in items) == 2

    # One open item per (organisation, subject): the victim's three reports about `honest`
    # are one review, with two repeats, not three chances for a reviewer's mistake.
    await wait_for(all_filed)
    listed = orjson.loads((await cli(config, "reports", "list", "--json")).stdout)["open"]
    by_subject = {item["subject"]: item["id"] for item in listed}
    assert set(by_subject) == {cheat.did, honest.did, lone.did}

    await cli(config, "reports", "confirm", by_subject[cheat.did], "--reviewer", "sam",
              "--why", "invoice 4411 was fabricated", "--observe")  # fmt: skip
    before = await store.peer(lone.did, wall_clock_ms(), cached=False)
    shown = await cli(config, "reports", "confirm", by_subject[lone.did], "--reviewer", "sam",
                      "--why", "one victim's word, checked", "--json")  # fmt: skip
    assert orjson.loads(shown.stdout)["observed"] is False
    # Confirmed without --observe: it counts in full and slashes, but one organisation's
    # word does not put the peer under observation by itself.
    after = await store.peer(lone.did, wall_clock_ms(), cached=False)
    assert after.failures.value > before.failures.value
    assert "under_observation" not in (await view(store, lone.did))["reasons"]["behavioral"]
    await cli(config, "reports", "dismiss", by_subject[honest.did], "--reviewer", "sam",
              "--why", "the output was correct", "--penalise")  # fmt: skip
    again = await cli(config, "reports", "confirm", by_subject[honest.did], "--reviewer", "sam",
                      "--why", "changed my mind", check=False)  # fmt: skip
    assert again.returncode != 0 and "already decided" in again.stderr

    assert "under_observation" in (await view(store, cheat.did))["reasons"]["behavioral"]
    assert "under_observation" not in (await view(store, honest.did))["reasons"]["behavioral"]
    victim_state = await store.peer(victim.did, wall_clock_ms(), cached=False)
    assert victim_state.failures.value == pytest.approx(1.0)  # the false report, penalised
    assert await store.serious.list() == []


async def test_issuer_roles_from_the_cli(config: BrokerConfig, store: RedisStore) -> None:
    from tests.integration.test_cli_flow import cli

    issuer = AgentKey.generate().did
    missing = await cli(config, "issuer", "add", issuer, check=False)
    assert missing.returncode != 0 and "--role" in missing.stderr
    await cli(config, "issuer", "add", issuer, "--role", "identity", "--role", "stake")
    shown = orjson.loads((await cli(config, "issuer", "list", "--json")).stdout)
    assert shown == {"issuers": [{"did": issuer, "roles": ["identity", "stake"]}]}
    await cli(config, "issuer", "remove", issuer, "--role", "stake")
    assert await store.issuer_roles() == {issuer: frozenset({"identity"})}
    await cli(config, "issuer", "remove", issuer)
    assert await store.issuer_roles() == {}
    unknown = await cli(config, "revoke", "evidence", "no-such-id", check=False)
    assert unknown.returncode != 0 and "no-such-id" in unknown.stderr


async def test_a_serious_report_about_a_payment_holds_payments_until_a_reviewer_decides(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    from tests.integration.test_cli_flow import cli

    payer, payee = await agents(), await agents()
    await make_level(store, payer.client, AgentKey.generate(), "trusted")
    await make_level(store, payee.client, AgentKey.generate(), "trusted")
    pay = PaymentIntent(currency="USD", amount="20.00")
    await payer.send(payee, {"invoice": 1}, kind="payment", payment=pay)
    [paid] = await delivered(payee)
    # The payee says that payment was fraud: one verified victim cannot block the payer,
    # but the payer's money now waits for a human.
    await payee.client.report(paid.envelope, "policy_violation", severity="high")

    async def held() -> bool:
        return bool(await store.serious.list(subject=payer.did))

    await wait_for(held)
    await asyncio.sleep(0.6)  # every router's cache follows within its TTL
    assert await payment_outcome(payer, payee, config, "20.00", "USD") == (
        "escalate", "payment_hold",
    )  # fmt: skip
    await payer.send(payee, {"still": "data"})
    assert len(await delivered(payee)) == 1
    assert (await view(store, payer.did))["tier"] in ("trusted", "established")
    [item] = await store.serious.list(subject=payer.did)
    await cli(config, "reports", "dismiss", item["id"], "--reviewer", "sam", "--why", "refunded")
    await asyncio.sleep(0.6)
    assert (await payment_outcome(payer, payee, config, "20.00", "USD"))[0] == "deliver"
