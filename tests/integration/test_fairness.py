"""Ingress lanes on the real servers: a flooder fills only its own lane and is pushed
back, the honest sender's messages all arrive, lanes of agents provisioned after the
router started are consumed, and nobody reads or writes beyond their permissions.

How fast the honest sender is during a flood is measured in bench/fairness.py
(docs/PERFORMANCE.md), not asserted here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import pytest
from aio_pika.exceptions import AMQPError, DeliveryError

from broker.app import open_store
from broker.config import BrokerConfig, with_vhost
from broker.core.identity import AgentKey
from broker.core.state import RecipientProfile
from broker.errors import Backpressure
from broker.ops.provision import agent_amqp_url, provision_agent
from broker.ops.sweeper import run_sweeper
from broker.router import Router
from broker.sdk.client import AgentClient
from broker.store.redis import RedisStore
from tests.integration.conftest import Agent, AgentFactory, router_view
from tests.integration.trust import make_level

LANE = 20  # the flooder's lane: small, so filling it takes a moment


@asynccontextmanager
async def _router(
    config: BrokerConfig, logins: dict[str, str], broker_key: AgentKey | None = None
) -> AsyncIterator[Router]:
    """A router with the router's own least-privilege logins, started here."""
    store = open_store(config)
    router = Router(router_view(config, logins), store, broker_key=broker_key, sweeper=run_sweeper)
    await router.start()
    try:
        yield router
    finally:
        await router.stop()
        await store.close()


async def _flooder(config: BrokerConfig, store: RedisStore) -> tuple[AgentKey, str]:
    key = AgentKey.generate()
    creds = await provision_agent(config, store, RecipientProfile(did=key.did), lane_length=LANE)
    return key, agent_amqp_url(config, creds)


async def test_a_full_lane_pushes_back_on_its_sender_only_and_loses_nothing(
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    service_logins: dict[str, str],
    broker_key: AgentKey,
) -> None:
    """With no router running, the flooder fills its lane and its next publish is refused
    (a nack; Backpressure in the SDK) while the honest sender publishes on; once a router
    runs, every accepted message of both is delivered and the refused one is not."""
    honest, recipient = await agents(), await agents()
    key, url = await _flooder(config, store)
    flooder = await AgentClient(key, url, publish_timeout=1.0).connect()
    try:
        async with _router(config, service_logins, broker_key):  # the handshakes need one
            await make_level(store, honest.client, AgentKey.generate(), "trusted")
            await make_level(store, flooder, AgentKey.generate(), "trusted")
        assert flooder.ingress_exchange == config.topology.lane_exchange(key.did)
        # A quorum queue checks its bound as it goes: it may take one more than LANE.
        accepted: list[str] = []
        refused = None
        for n in range(2 * LANE):
            envelope = flooder.envelope(recipient.did, {"n": n})
            try:
                await flooder.send_envelope(envelope)
            except Backpressure as exc:
                assert "lane" in str(exc)
                refused = envelope
                break
            accepted.append(envelope.id)
        assert refused is not None and len(accepted) >= LANE
        assert flooder.pushbacks >= 1
        # Raw AMQP too: the broker itself nacks it (x-overflow reject-publish).
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            lane = await channel.get_exchange(config.topology.lane_exchange(key.did), ensure=False)
            with pytest.raises(DeliveryError):
                await lane.publish(aio_pika.Message(b"{}"), routing_key="")
        honest_ids = [(await honest.send(recipient)).id for _ in range(5)]

        async with _router(config, service_logins):
            got = await recipient.receive_all(timeout=3.0)
            assert sorted(r.envelope.id for r in got) == sorted(accepted + honest_ids)
            # With room again in its lane, the flooder's publishes are taken again.
            await flooder.send_envelope(refused)  # confirmed: no DeliveryError this time
            assert [r.envelope.id for r in await recipient.receive_all()] == [refused.id]
    finally:
        await flooder.close()


async def test_lanes_of_agents_provisioned_later_are_consumed_also_after_a_restart(
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    service_logins: dict[str, str],
    broker_key: AgentKey,
) -> None:
    recipient = await agents()
    async with _router(config, service_logins, broker_key) as router:
        late: Agent = await agents()  # provisioned while the router runs
        await make_level(store, late.client, AgentKey.generate(), "trusted")
        sent = await late.send(recipient)
        assert [r.envelope.id for r in await recipient.receive_all(timeout=3.0)] == [sent.id]
        assert router.metrics.lanes._value.get() >= 2
    # Sent while no router runs; a new router finds the lane in Redis.
    queued = await late.send(recipient)
    async with _router(config, service_logins):
        assert [r.envelope.id for r in await recipient.receive_all(timeout=3.0)] == [queued.id]


async def _publish(url: str, exchange: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()  # confirms: a refusal closes the channel
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(b"{}"), routing_key="")


async def test_nobody_reads_or_writes_a_lane_beyond_their_permissions(
    config: BrokerConfig, agents: AgentFactory, service_logins: dict[str, str]
) -> None:
    """An agent writes only its own lane (not another's, not trust.ingress) and reads no
    lane; the router reads lanes but writes none and declares nothing."""
    mine, other = await agents(), await agents()
    topology = config.topology
    await _publish(mine.amqp_url, topology.lane_exchange(mine.did))  # allowed
    for exchange in (topology.lane_exchange(other.did), topology.ingress_exchange):
        with pytest.raises(AMQPError, match="ACCESS_REFUSED"):
            await _publish(mine.amqp_url, exchange)
    connection = await aio_pika.connect(mine.amqp_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(AMQPError, match="ACCESS_REFUSED"):
            queue = await channel.get_queue(topology.lane_queue(other.did), ensure=False)
            await queue.get(no_ack=False, fail=False)

    router_url = with_vhost(service_logins["router"], config.vhost)
    connection = await aio_pika.connect(router_url)
    async with connection:
        channel = await connection.channel()
        lane = await channel.get_queue(topology.lane_queue(mine.did), ensure=True)
        message = await lane.get(no_ack=False, fail=False)  # the router may read it
        assert message is not None
        await message.nack(requeue=True)
    with pytest.raises(AMQPError, match="ACCESS_REFUSED"):
        await _publish(router_url, topology.lane_exchange(mine.did))
    connection = await aio_pika.connect(router_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(AMQPError, match="ACCESS_REFUSED"):
            await channel.declare_queue(topology.lane_queue("did:key:z6Mkmade-up"), durable=True)
