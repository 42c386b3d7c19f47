"""Ops tools on the real servers: versioned policy, what-if against an actual replay, and
the flight recorder."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.agreements import make_pact
from broker.core.canonical import canonical_json
from broker.core.envelope import PaymentIntent
from broker.core.identity import AgentKey
from broker.core.policydiff import set_value
from broker.core.signing import countersign
from broker.core.whatif import replay
from broker.router import Router
from broker.store.redis import RedisStore
from tests.integration.conftest import Agent, AgentFactory
from tests.integration.trust import make_level

DAY_MS = 86_400_000


async def wait_for_decisions(store: RedisStore, count: int) -> list[dict[str, Any]]:
    for _ in range(100):
        entries = await store.recent_decisions(limit=10_000)
        if len(entries) >= count:
            return entries
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {len(entries)} of {count} decisions were logged")


async def send_round(senders: list[Agent], recipient: Agent) -> None:
    pay = PaymentIntent(currency="USD", amount="50.00")
    for sender in senders:
        await sender.send(recipient, {"round": True})
        await sender.send(recipient, {"pay": True}, kind="payment", payment=pay)


async def test_what_if_predicts_what_an_actual_replay_then_does(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    issuer = AgentKey.generate()
    senders = [await agents() for _ in range(3)]
    recipient = await agents()
    for sender, level in zip(senders, ("probation", "established", "trusted"), strict=True):
        await make_level(store, sender.client, issuer, level)
    await send_round(senders, recipient)
    before = await wait_for_decisions(store, 6)

    current = await store.load_policy()
    proposed = set_value(set_value(current, "thresholds.probation", "0.55"),
                         "caps.established_per_message", "40")  # fmt: skip
    predicted = replay(before, current, proposed)
    summary = predicted.to_dict()
    # The probation sender's data is now blocked, the established sender's $50 escalated.
    assert (summary["newly_blocked"], summary["newly_escalated"], summary["newly_delivered"]) == (
        1,
        1,
        0,
    )
    assert set(summary["by_sender"]) == {senders[0].did, senders[1].did}

    saved = await store.save_policy(proposed, who="test", why="what-if check")
    for _ in range(50):
        if router.policy.version == saved.version:
            break
        await asyncio.sleep(0.02)
    await send_round(senders, recipient)
    after = (await wait_for_decisions(store, 12))[6:]
    predicted_actions = [(e["from"], e["kind"], _predicted(predicted, e)) for e in before]
    actual_actions = [(e["from"], e["kind"], e["action"]) for e in after]
    assert sorted(actual_actions) == sorted(predicted_actions)


def _predicted(result: Any, entry: dict[str, Any]) -> str:
    for change in result.changes:
        if change["trace"] == entry["trace"]:
            return str(change["now"])
    return str(entry["action"])


async def test_policy_versions_record_who_and_why_and_roll_back(
    router: Router, store: RedisStore
) -> None:
    current = await store.load_policy()
    v2 = await store.save_policy(set_value(current, "caps.trusted_per_day", "60000"),
                                 who="ops-alice", why="quarter end")  # fmt: skip
    v3 = await store.save_policy(set_value(v2, "caps.trusted_per_day", "70000"),
                                 who="ops-bob", why="even more")  # fmt: skip
    assert (v2.version, v3.version) == (2, 3)
    history = await store.policy_history()
    assert [(h["version"], h["who"], h["why"]) for h in history] == [
        (3, "ops-bob", "even more"), (2, "ops-alice", "quarter end"),
    ]  # fmt: skip
    back = await store.save_policy(await store.policy_version(2), who="ops-carol", why="undo")
    assert back.version == 4 and back.caps.trusted_per_day == 60_000
    for _ in range(50):
        if router.policy.version == 4:
            break
        await asyncio.sleep(0.02)
    assert router.policy.caps.trusted_per_day == 60_000


@pytest.mark.parametrize("monitoring", ["full", "metadata", "hashes"])
async def test_the_flight_recorder_honours_the_pacts_monitoring_terms(
    router: Router, store: RedisStore, agents: AgentFactory, monitoring: str
) -> None:
    sender, recipient = await agents(), await agents()
    await make_level(store, sender.client, AgentKey.generate(), "established")
    pact = make_pact(sender.key, recipient.did, now_ms=wall_clock_ms(), ttl_ms=DAY_MS,
                     kinds=["data"], monitoring=monitoring)  # fmt: skip
    await sender.client.present(countersign(recipient.key, pact, "recipient_signature"))
    body = {"secret": "the recipe"}
    await sender.send(recipient, body)
    [received] = await recipient.receive_all()
    record = await store.trace(received.trust.trace_id)
    assert record is not None and record["message"]["id"] == received.envelope.id
    assert record["decision"]["action"] == "deliver" and record["monitoring"] == monitoring
    expected = {
        "full": {"body": body},
        "metadata": None,
        "hashes": {"body_sha256": hashlib.sha256(canonical_json(body)).hexdigest()},
    }[monitoring]
    assert record["content"] == expected


async def test_a_trace_tells_the_whole_story_including_later_reports(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    sender, recipient = await agents(), await agents()
    issuer = AgentKey.generate()
    await make_level(store, sender.client, issuer, "established")
    await make_level(store, recipient.client, issuer, "trusted")
    await sender.send(recipient, {"q": 1})
    [received] = await recipient.receive_all()
    await recipient.client.report(received.envelope, "success")
    for _ in range(50):
        record = await store.trace(received.trust.trace_id)
        if record and record["events"]:
            break
        await asyncio.sleep(0.05)
    assert record is not None
    assert record["received_ms"] <= record["committed_ms"]
    assert set(record["decision"]["dimensions"]) == {
        "identity", "reputation", "compliance", "behavioral", "stake",
    }  # fmt: skip
    assert "body" not in str(record["content"])  # no pact: metadata only
    assert [(e["event"], e["outcome"], e["reporter"]) for e in record["events"]] == [
        ("report", "success", recipient.did)
    ]
    assert await store.trace_id_of(received.envelope.id) == received.trust.trace_id
    # Kept for the configured retention (TRUST_TRACE_TTL_HOURS), not forever.
    ttl_ms = await store._redis.pttl(store.keys.trace(received.trust.trace_id))
    assert config.trace_ttl_ms - 60_000 < ttl_ms <= config.trace_ttl_ms


async def test_the_metrics_endpoint_counts_decisions_and_reports_health(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    import socket
    import urllib.request

    from broker.router.metrics import poll_health

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    router.metrics.serve(port)
    sender, recipient = await agents(), await agents()
    await make_level(store, sender.client, AgentKey.generate(), "established")
    await sender.send(recipient, {"m": 1})
    await sender.client.publish_raw(b"garbage")
    await recipient.receive_all(timeout=1.0)
    stop = asyncio.Event()
    stop.set()  # one pass of the health poller
    await poll_health(router.metrics, config, store.ping, lambda: store.cache_stats, stop)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    text = await asyncio.to_thread(scrape)
    assert (
        'trust_decisions_total{action="deliver",reason="trust_sufficient",tier="established"} 1.0'
        in text
    )
    assert 'trust_decisions_total{action="block",reason="malformed",tier="blocked"} 1.0' in text
    assert "trust_decision_seconds_count 2.0" in text
    assert "trust_redis_up 1.0" in text and "trust_rabbitmq_up 1.0" in text
    assert 'trust_queue_messages{queue="trust.ingress"}' in text


async def test_trace_retention_follows_the_configuration(config: BrokerConfig) -> None:
    from dataclasses import replace

    from broker.app import open_store

    store = open_store(replace(config, trace_ttl_ms=3_600_000))
    try:
        await store.record_decision(b"{}", b"{}", "ab" * 16, None)
        ttl_ms = await store._redis.pttl(store.keys.trace("ab" * 16))
    finally:
        await store.close()
    assert 3_540_000 < ttl_ms <= 3_600_000


def test_routers_on_one_host_each_get_a_metrics_port() -> None:
    import socket

    import pytest

    from broker.errors import ConfigError
    from broker.router.metrics import RouterMetrics

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        # A second router with the default (a starting point) moves on to a free port...
        moved = RouterMetrics().serve(port, explicit=False)
        assert moved != port and port < moved < port + 10
        # ...and one that asked for exactly that port is told, instead of running unseen.
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 in use.*--metrics-port"):
            RouterMetrics().serve(port, explicit=True)
    finally:
        taken.close()
