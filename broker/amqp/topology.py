"""Declaring the exchanges and queues; shared by the router and agent provisioning."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from broker.config import Topology

# Security reviewers replay the blocked stream from any offset, so it keeps history;
# the cap stops a flood of garbage from filling the disk (oldest segments go first).
BLOCKED_STREAM_MAX_BYTES = 5 * 1024**3


# An agent's lane holds at most this many messages (and bytes); past that RabbitMQ nacks
# the agent's own publishes (x-overflow reject-publish), which the SDK treats as push-back:
# a flooder fills its own lane, never anyone else's, and nothing accepted is dropped.
LANE_MAX_LENGTH = 2_000
LANE_MAX_BYTES = 64 * 1024**2

# Handshakes are interactive: a request nobody answered within a minute is stale.
HANDSHAKE_TTL_MS = 60_000


async def open_router_topology(channel: AbstractChannel, topology: Topology) -> AbstractQueue:
    """The ingress queue the router consumes, checked passively: the router's login
    declares nothing (the admin did, with declare_router_topology); a missing topology
    is a clear error instead of a half-declared one."""
    for exchange in (
        topology.deliver_exchange, topology.blocked_exchange, topology.escalations_exchange
    ):  # fmt: skip
        await channel.get_exchange(exchange, ensure=True)
    return await channel.get_queue(topology.ingress_queue, ensure=True)


async def declare_router_topology(
    channel: AbstractChannel, topology: Topology
) -> tuple[AbstractQueue, AbstractExchange]:
    """Declare everything the router uses (the admin does, on setup); return the ingress
    queue and deliver exchange."""
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
    escalations = await channel.declare_queue(
        topology.escalations_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    for record_queue, name in (
        (blocked, topology.blocked_exchange), (escalations, topology.escalations_exchange)
    ):  # fmt: skip
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
        await record_queue.bind(exchange)
    handshake = await channel.declare_exchange(
        topology.handshake_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    # Quorum like every other queue: a classic queue lives on one node, and with that node
    # down no router could open its session (the fault suite's kill-rabbit found it).
    requests = await channel.declare_queue(
        topology.handshake_queue,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-message-ttl": HANDSHAKE_TTL_MS},
    )
    await requests.bind(handshake)
    return queue, deliver


async def declare_session_lease(channel: AbstractChannel, topology: Topology, session: str) -> None:
    """The session's lease: an exclusive queue that lives exactly as long as the
    connection of `channel` does on its node (broker/amqp/indoubt.py)."""
    await channel.declare_queue(
        topology.session_queue_prefix + session,
        exclusive=True,
        arguments={"x-queue-type": "classic"},
    )


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


async def declare_agent_queue(
    channel: AbstractChannel, topology: Topology, did: str, *, lane_length: int = LANE_MAX_LENGTH
) -> None:
    """Declare agent.<DID> and bind it to the deliver exchange under the DID, and the
    agent's ingress lane (holding at most `lane_length` messages)."""
    deliver = await declare_deliver_exchange(channel, topology)
    queue = await channel.declare_queue(
        topology.agent_queue(did), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(deliver, routing_key=did)
    await declare_agent_lane(channel, topology, did, length=lane_length)


async def declare_agent_lane(
    channel: AbstractChannel, topology: Topology, did: str, *, length: int = LANE_MAX_LENGTH
) -> None:
    """Declare the agent's ingress lane: exchange trust.in.<DID> (only the agent may write
    to it) bound to the bounded quorum queue trust.lane.<DID> (only the router reads it)."""
    exchange = await channel.declare_exchange(
        topology.lane_exchange(did), aio_pika.ExchangeType.FANOUT, durable=True
    )
    lane = await channel.declare_queue(
        topology.lane_queue(did),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-max-length": length,
            "x-max-length-bytes": LANE_MAX_BYTES,
            "x-overflow": "reject-publish",
        },
    )
    await lane.bind(exchange)
