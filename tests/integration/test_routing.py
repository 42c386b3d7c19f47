"""The router against real RabbitMQ and Redis: delivery, tiers, gates, bypass, propagation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import orjson
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelClosed

from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.envelope import PaymentIntent, encode_envelope
from broker.core.identity import AgentKey
from broker.core.policy import Policy, Thresholds
from broker.core.records import StreamEntry
from broker.ops.reading import read_blocked, read_escalations
from broker.ops.sweeper import run_sweeper
from broker.router import Router
from broker.store.redis import RedisStore
from tests.integration.conftest import AgentFactory
from tests.integration.trust import make_level, verify_identity


async def blocked_records(
    config: BrokerConfig, count: int, timeout: float = 8.0
) -> list[StreamEntry]:
    """Wait until the blocked stream holds at least `count` records."""
    deadline = time.monotonic() + timeout
    while True:
        entries = await read_blocked(config, limit=count + 10, idle_timeout=0.5)
        if len(entries) >= count or time.monotonic() > deadline:
            return entries


def usd(amount: str) -> dict[str, Any]:
    return {"kind": "payment", "payment": PaymentIntent(currency="USD", amount=amount)}


async def test_delivers_to_the_recipient_queue_with_trust_headers(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    alice, bob, carol = await agents(), await agents(), await agents()
    await make_level(store, alice.client, AgentKey.generate(), "established")
    sent = await alice.send(bob, {"task": "summarise"})
    got = await bob.receive_all()
    assert [r.envelope.id for r in got] == [sent.id]
    trust = got[0].trust
    assert trust.action == "deliver" and trust.tier == "established"
    assert trust.score == pytest.approx(0.65, abs=0.03)
    assert set(trust.dimensions) == {"identity", "reputation", "compliance", "behavioral", "stake"}
    assert trust.policy_version == 1 and len(trust.trace_id) == 32
    assert await carol.receive_all(timeout=0.5) == []


@pytest.mark.parametrize(
    ("level", "options", "action", "tier", "reason"),
    [
        ("new", {}, "block", "blocked", "insufficient_trust"),
        ("probation", {}, "deliver", "probation", "probation"),
        ("probation", usd("1.00"), "block", "probation", "payment_trust_threshold"),
        ("established", usd("100.00"), "deliver", "established", "payment_within_caps"),
        ("established", usd("100.01"), "escalate", "established", "payment_cap_exceeded"),
        ("trusted", usd("10000.00"), "deliver", "trusted", "payment_within_caps"),
        ("trusted", usd("10000.01"), "escalate", "trusted", "payment_cap_exceeded"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_each_tier_routes_as_the_policy_says(
    router: Router,
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    level: str,
    options: dict[str, Any],
    action: str,
    tier: str,
    reason: str,
) -> None:
    sender, recipient = await agents(), await agents()
    await make_level(store, sender.client, AgentKey.generate(), level)
    sent = await sender.send(recipient, {"x": 1}, **options)
    if action == "deliver":
        got = await recipient.receive_all()
        assert [(r.envelope.id, r.trust.tier, r.trust.reasons[0]) for r in got] == [
            (sent.id, tier, reason)
        ]
        return
    assert await recipient.receive_all(timeout=0.8) == []
    if action == "escalate":
        records = await read_escalations(config)
    else:
        records = [entry.record for entry in await blocked_records(config, 1)]
    assert [(r["message_id"], r["decision"]["tier"], r["reason"]) for r in records] == [
        (sent.id, tier, reason)
    ]


async def test_gate_failures_land_on_the_blocked_stream_and_never_reach_an_agent(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    alice, bob = await agents(), await agents()
    mallory = AgentKey.generate()
    await make_level(store, alice.client, AgentKey.generate(), "trusted")

    forged = alice.client.envelope(bob.did, {"pay": "me"})
    forged_raw = encode_envelope(forged.model_copy(update={"sender": mallory.did}))
    tampered = alice.client.envelope(bob.did, {"amount": 1})
    tampered_raw = encode_envelope(tampered).replace(b'"amount":1', b'"amount":9')
    replayed = alice.client.envelope(bob.did, {"once": True})
    unknown = alice.client.envelope(AgentKey.generate().did, {"to": "nobody"})
    for raw in (forged_raw, tampered_raw, encode_envelope(replayed)):
        await alice.client.publish_raw(raw)
    first = await bob.receive_all(timeout=1.0)
    assert [r.envelope.id for r in first] == [replayed.id]
    # The same bytes again are idempotent (no second outcome); a different message
    # reusing the id is a replay.
    await alice.client.publish_raw(encode_envelope(replayed))
    reused = alice.client.envelope(bob.did, {"once": False}, message_id=replayed.id)
    await alice.client.publish_raw(encode_envelope(reused))
    await alice.client.publish_raw(encode_envelope(unknown))
    await alice.client.publish_raw(b'{"version": 1, "id": ')
    await alice.client.publish_raw(b"x" * (300 * 1024))

    entries = await blocked_records(config, 6)
    by_reason = {(e.record["reason"], e.record["message_id"]) for e in entries}
    assert by_reason == {
        ("bad_signature", forged.id),
        ("bad_signature", tampered.id),
        ("replay", replayed.id),
        ("unknown_recipient", unknown.id),
        ("malformed", None),
        ("oversized", None),
    }
    malformed = next(e.record for e in entries if e.record["reason"] == "malformed")
    import base64

    assert base64.b64decode(malformed["raw_b64"]) == b'{"version": 1, "id": '
    assert await bob.receive_all(timeout=0.5) == []


async def test_a_direct_publish_to_another_agents_queue_is_refused_by_rabbitmq(
    router: Router, config: BrokerConfig, agents: AgentFactory
) -> None:
    mallory, victim = await agents(), await agents()
    connection = await aio_pika.connect(mallory.amqp_url)
    async with connection:
        for exchange_name in ("", config.topology.deliver_exchange):
            channel = await connection.channel(publisher_confirms=True)
            exchange = (
                channel.default_exchange
                if exchange_name == ""
                else await channel.get_exchange(exchange_name, ensure=False)
            )
            routing_key = (
                config.topology.agent_queue(victim.did) if exchange_name == "" else victim.did
            )
            with pytest.raises((ChannelAccessRefused, ChannelClosed)) as refused:
                await exchange.publish(aio_pika.Message(b"{}"), routing_key=routing_key)
                await channel.close()
            assert "ACCESS_REFUSED" in str(refused.value) or "403" in str(refused.value)
        channel = await connection.channel()
        with pytest.raises((ChannelAccessRefused, ChannelClosed)):
            queue = await channel.get_queue(config.topology.agent_queue(victim.did), ensure=False)
            await queue.get(fail=False)
    assert await victim.receive_all(timeout=0.5) == []


async def test_revocation_and_policy_changes_reach_another_router_within_a_second(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    from broker.app import open_store

    other_store = open_store(config)
    second = Router(config, other_store, sweeper=run_sweeper)
    await second.start()
    try:
        alice, bob = await agents(), await agents()
        await make_level(store, alice.client, AgentKey.generate(), "established")
        await alice.send(bob)
        assert len(await bob.receive_all(timeout=1.0)) == 1

        stricter = Policy(
            version=2, thresholds=Thresholds(probation=0.7, established=0.8, trusted=0.9)
        )
        started = time.monotonic()
        await store.save_policy(stricter)
        await store.revoke_key(alice.did)
        while time.monotonic() - started < 1.0 and (
            router.policy.version != 2 or second.policy.version != 2
        ):
            await asyncio.sleep(0.02)
        assert (router.policy.version, second.policy.version) == (2, 2)
        # Both routers compete for ingress: whichever takes these must see the revocation.
        sent = [await alice.send(bob, {"i": i}) for i in range(6)]
    finally:
        await second.stop()
        await other_store.close()
    entries = await blocked_records(config, 6)
    assert {e.record["message_id"] for e in entries} == {s.id for s in sent}
    assert {e.record["reason"] for e in entries} == {"revoked_key"}
    assert await bob.receive_all(timeout=0.5) == []


async def test_splitting_a_payment_cannot_dodge_the_daily_cap(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    payer, payee = await agents(), await agents()
    await make_level(store, payer.client, AgentKey.generate(), "established")
    # Established tier: 100 per message, 500 per rolling day. Ten payments of 90 = 900.
    for _ in range(10):
        await payer.send(payee, {"invoice": 1}, **usd("90.00"))
    delivered = await payee.receive_all(timeout=1.5)
    escalated = await read_escalations(config)
    assert len(delivered) == 5  # 450 fits; the sixth would make 540
    assert len(escalated) == 5
    assert {r["reason"] for r in escalated} == {"daily_cap_exceeded"}


async def test_a_refused_report_never_spends_its_senders_daily_cap(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    payer, payee = await agents(), await agents()
    await make_level(store, payer.client, AgentKey.generate(), "established")
    # Reports carrying 90 USD each, about messages the payee never sent: each is blocked,
    # so none of it may count against the payer's 500 USD per day.
    for i in range(3):
        await payer.send(
            payee, {"message_id": f"never-delivered-{i:04d}", "outcome": "success"},
            kind="report", payment=PaymentIntent(currency="USD", amount="90.00"),
        )  # fmt: skip
    entries = await blocked_records(config, 3)
    assert [e.record["reason"] for e in entries] == ["report_unknown_message"] * 3
    assert await store.spent(payer.did, wall_clock_ms()) == 0


async def test_privacy_gate_blocks_card_data_to_permanent_retention(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    sender = await agents()
    archive = await agents(retention="permanent")
    scratch = await agents(retention="ephemeral")
    await make_level(store, sender.client, AgentKey.generate(), "trusted")
    blocked = await sender.send(archive, {"pan": "redacted"}, data_classes=("payment_card",))
    # Not labelled, but the body carries an Amex number: detected all the same.
    unlabelled = await sender.send(archive, {"note": "card 3714-496353-98431, thanks"})
    allowed = await sender.send(scratch, {"pan": "redacted"}, data_classes=("payment_card",))
    plain = await sender.send(archive, {"note": "order 1795422107561 ships 2026-11-23"})
    assert [r.envelope.id for r in await scratch.receive_all()] == [allowed.id]
    assert [r.envelope.id for r in await archive.receive_all()] == [plain.id]
    # The router decides concurrently, so the stream's order is not publish order.
    records = {e.record["message_id"]: e.record for e in await blocked_records(config, 2)}
    assert set(records) == {blocked.id, unlabelled.id}
    assert {r["reason"] for r in records.values()} == {"privacy_violation"}
    assert "detected in the body" in records[unlabelled.id]["decision"]["remediation"]
    assert "detected in the body" not in records[blocked.id]["decision"]["remediation"]


async def test_router_survives_a_burst_of_garbage_and_keeps_delivering(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    alice, bob = await agents(), await agents()
    await verify_identity(store, alice.client, AgentKey.generate())
    garbage = [b"", b"null", b"[]", b'{"version":1}', orjson.dumps({"body": "x" * 10}), b"\xff\xfe"]
    for raw in garbage * 5:
        await alice.client.publish_raw(raw)
    sent = await alice.send(bob, {"still": "alive"})
    got = await bob.receive_all()
    assert [r.envelope.id for r in got] == [sent.id]
    entries = await blocked_records(config, len(garbage) * 5)
    assert len(entries) == len(garbage) * 5
    assert {e.record["reason"] for e in entries} == {"malformed"}


async def test_one_structured_log_line_per_decision_and_no_message_body(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    alice, bob = await agents(), await agents()
    await verify_identity(store, alice.client, AgentKey.generate())
    with caplog.at_level("DEBUG", logger="broker.router"):
        delivered = await alice.send(bob, {"secret": "do-not-log-me"})
        await alice.client.publish_raw(b"not json")
        await bob.receive_all(timeout=1.0)
        await blocked_records(config, 1)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "broker.router" and r.levelname == "DEBUG"
    ]
    events = [orjson.loads(line) for line in lines]
    # Messages are decided concurrently, so the two lines may come in either order.
    assert sorted((e["event"], e["message_id"] or "", e["action"]) for e in events) == [
        ("decision", "", "block"),
        ("decision", delivered.id, "deliver"),
    ]
    assert not any("do-not-log-me" in r.getMessage() for r in caplog.records)


async def test_a_delivery_with_no_queue_bound_lands_on_the_blocked_stream(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    from urllib.parse import quote

    from broker.amqp.management import ManagementAPI

    alice, bob = await agents(), await agents()
    await verify_identity(store, alice.client, AgentKey.generate())
    api = ManagementAPI(config.management_url)
    queue = quote(config.topology.agent_queue(bob.did), safe="")
    await asyncio.to_thread(
        api.request, "DELETE", f"/api/queues/{quote(config.vhost, safe='')}/{queue}"
    )
    sent = await alice.send(bob, {"to": "nowhere"})
    entries = await blocked_records(config, 1)
    assert [(e.record["message_id"], e.record["reason"]) for e in entries] == [
        (sent.id, "undeliverable")
    ]
    assert entries[0].record["decision"]["tier"] == "probation"
