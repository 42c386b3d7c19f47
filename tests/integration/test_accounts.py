"""Accounts on the real RabbitMQ: the router's own login may write only where an outcome
goes, declares nothing, and `setup` (the admin) brings any vhost to the current topology."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.exceptions import AMQPError

from broker.amqp.management import ManagementAPI
from broker.config import BrokerConfig, with_vhost
from broker.ops.provision import setup_vhost
from tests.integration.conftest import Agent, AgentFactory


async def _publish(url: str, exchange: str, routing_key: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()  # confirms: a refusal closes the channel
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(aio_pika.Message(b"{}"), routing_key=routing_key)


async def test_the_router_login_writes_only_to_deliver_blocked_and_escalations(
    config: BrokerConfig, service_logins: dict[str, str], agents: AgentFactory
) -> None:
    victim: Agent = await agents()
    router_url = with_vhost(service_logins["router"], config.vhost)
    for exchange in ("trust.deliver", "trust.blocked", "trust.escalations"):
        await _publish(router_url, exchange, victim.did)  # allowed
    refused = [
        ("", f"agent.{victim.did}"),  # straight into an agent's queue
        ("", "trust.blocked"),  # around the records exchange
        ("trust.ingress", ""),  # back into ingress
        ("trust.handshake", ""),
    ]
    for exchange, key in refused:
        with pytest.raises(AMQPError, match="ACCESS_REFUSED"):
            await _publish(router_url, exchange, key)
    connection = await aio_pika.connect(router_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(AMQPError, match="ACCESS_REFUSED"):
            await channel.declare_queue("router-made-this", durable=True)


async def test_setup_replaces_a_classic_handshake_queue(config: BrokerConfig) -> None:
    api = ManagementAPI(config.management_url)
    path = f"/api/queues/{config.vhost}/trust.handshake"
    await asyncio.to_thread(api.request, "DELETE", path)
    await asyncio.to_thread(api.request, "PUT", path, {"durable": True, "arguments": {}})
    assert (await asyncio.to_thread(api.request, "GET", path))["type"] == "classic"
    await setup_vhost(config)
    assert (await asyncio.to_thread(api.request, "GET", path))["type"] == "quorum"
