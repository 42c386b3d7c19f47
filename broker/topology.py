"""Declaring the exchanges and queues; shared by the router and agent provisioning."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from broker.config import Topology

# Security reviewers replay the blocked stream from any offset, so it keeps history;
# the cap stops a flood of garbage from filling the disk (oldest segments go first).
BLOCKED_STREAM_MAX_BYTES = 5 * 1024**3


async def declare_router_topology(
    channel: AbstractChannel, topology: Topology
) -> tuple[AbstractQueue, AbstractExchange]:
    """Declare everything the router uses; return the ingress queue and deliver exchange."""
    ingress = await channel.declare_exchange(
        topology.ingress_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await channel.declare_queue(
        topology.ingress_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(ingress)
    blocked = await channel.declare_queue(
        topology.blocked_stream,
        durable=True,
        arguments={"x-queue-type": "stream", "x-max-length-bytes": BLOCKED_STREAM_MAX_BYTES},
    )
    deliver = await declare_deliver_exchange(channel, topology)
    undeliverable = await channel.get_exchange(topology.undeliverable_exchange, ensure=False)
    await blocked.bind(undeliverable)
    await channel.declare_queue(
        topology.escalations_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    return queue, deliver


async def declare_deliver_exchange(
    channel: AbstractChannel, topology: Topology
) -> AbstractExchange:
    """trust.deliver, whose unroutable messages go to trust.undeliverable."""
    await channel.declare_exchange(
        topology.undeliverable_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    return await channel.declare_exchange(
        topology.deliver_exchange,
        aio_pika.ExchangeType.DIRECT,
        durable=True,
        arguments={"alternate-exchange": topology.undeliverable_exchange},
    )


async def declare_agent_queue(channel: AbstractChannel, topology: Topology, did: str) -> None:
    """Declare agent.<DID> and bind it to the deliver exchange under the DID."""
    deliver = await declare_deliver_exchange(channel, topology)
    queue = await channel.declare_queue(
        topology.agent_queue(did), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(deliver, routing_key=did)
