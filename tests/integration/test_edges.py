"""The broker's edges, attacked through documented interfaces only (issue 11): the
negotiator is no confused deputy, one agent cannot exhaust the handshake for another,
and the recipient gets exactly the bytes that were verified."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import orjson
import pytest

from broker.config import BrokerConfig
from broker.identity import AgentKey
from broker.negotiation import DIRECT_REPLY_TO
from broker.review import read_blocked, read_escalations
from broker.router import Router
from tests.integration.conftest import Agent, AgentFactory


async def queue_depth(config: BrokerConfig, queue: str) -> int:
    connection = await aio_pika.connect(config.amqp_vhost_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)


async def hellos(agent: Agent, count: int, *, reply_to: str, user_id: str | None) -> list[bytes]:
    """Publish `count` hello requests on trust.handshake with the agent's own login and
    collect the replies that come back on direct reply-to (none for another reply_to)."""
    replies: list[bytes] = []
    done = asyncio.Event()
    connection = await aio_pika.connect(agent.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=False)

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            replies.append(message.body)
            if len(replies) >= count:
                done.set()

        direct = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await direct.consume(on_reply, no_ack=True)
        exchange = await channel.get_exchange("trust.handshake", ensure=False)
        body = orjson.dumps({"op": "hello", "agent": agent.did})
        for _ in range(count):
            message = aio_pika.Message(
                body, reply_to=reply_to, correlation_id=uuid.uuid4().hex, user_id=user_id
            )
            await exchange.publish(message, routing_key="")
        if reply_to == DIRECT_REPLY_TO:
            await asyncio.wait_for(done.wait(), 300)
        else:
            await asyncio.sleep(1.0)  # nothing is expected back; give the router its chance
    return replies


# -- 1. no deputy --------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["victim", "trust.blocked", "trust.escalations"])
async def test_a_handshake_reply_goes_only_to_direct_reply_to(
    router: Router, config: BrokerConfig, agents: AgentFactory, broker_key: AgentKey, target: str
) -> None:
    attacker, victim = await agents(), await agents()
    queue = config.topology.agent_queue(victim.did) if target == "victim" else target
    blocked_before = len(await read_blocked(config, limit=1000, idle_timeout=0.5))
    assert await hellos(attacker, 3, reply_to=queue, user_id=attacker.did) == []
    await asyncio.sleep(0.5)
    # On 6a30867 an unscored hello reply landed in each of these.
    if target == "victim":
        assert await queue_depth(config, queue) == 0
        assert await victim.receive_all(timeout=0.5) == []
    elif target == "trust.blocked":
        assert len(await read_blocked(config, limit=1000, idle_timeout=0.5)) == blocked_before
    else:
        assert await read_escalations(config) == []
    assert router._negotiation is not None and router._negotiation.refused_replies == 3
    assert router.metrics.replies_refused._value.get() == 3  # type: ignore[attr-defined]
    # The negotiator still answers honest requests.
    proof = await attacker.client.handshake(expected_broker=broker_key.did)
    assert proof.agent == attacker.did


# -- 2. bounded per agent ------------------------------------------------------------------


async def test_one_agent_flooding_hellos_never_denies_another_agents_handshake(
    router: Router, agents: AgentFactory, broker_key: AgentKey
) -> None:
    flooder, honest = await agents(), await agents()
    # 10,200 hellos filled the global bound of 10,000 on 6a30867: the next honest
    # handshake failed with handshake_busy for the challenge lifetime.
    replies = await hellos(flooder, 10_200, reply_to=DIRECT_REPLY_TO, user_id=flooder.did)
    ops = {orjson.loads(reply)["op"] for reply in replies}
    assert ops == {"challenge"}  # the flooder is never refused: its oldest are dropped
    # Without a user_id the flood shares one bucket, which holds 8 as well.
    await hellos(flooder, 300, reply_to=DIRECT_REPLY_TO, user_id=None)
    proof = await honest.client.handshake(expected_broker=broker_key.did)
    assert proof.agent == honest.did
    bounded = router.metrics.challenges_bounded.labels("agent")._value.get()  # type: ignore[attr-defined]
    assert bounded >= 10_200 - 8
    assert router.metrics.challenges_bounded.labels("global")._value.get() == 0  # type: ignore[attr-defined]
    # The flooder's own latest challenge still works: it is never locked out either.
    assert (await flooder.client.handshake(expected_broker=broker_key.did)).agent == flooder.did
