"""Settling retries whose claim another session holds (broker/amqp/indoubt.py), against the
real RabbitMQ and Redis: the holder's lease is an exclusive queue on its connection, the
holder is recorded in the claim."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractConnection
from yarl import URL

from broker.amqp.failover import connect_any
from broker.amqp.indoubt import InDoubt, Verdict, holder_token
from broker.amqp.topology import declare_session_lease
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.policy import Policy
from broker.store.claims import Claim, Finish, HandedOver, HandOver
from broker.store.indoubt import InDoubtEntry
from broker.store.redis import RedisStore
from tests.integration.test_cli_flow import as_json, cli
from tests.unit.factories import sign_envelope

pytestmark = pytest.mark.integration


@pytest.fixture
async def own(config: BrokerConfig) -> AsyncIterator[AbstractConnection]:
    """The resolving router's own connection."""
    connection = await connect_any(config.amqp_vhost_urls)
    yield connection
    await connection.close()


def _resolver(config: BrokerConfig, own: AbstractConnection, *extra: str) -> InDoubt:
    return InDoubt(
        [*config.amqp_vhost_urls, *extra],
        session_prefix=config.topology.session_queue_prefix,
        own_connection=lambda: own,
    )


async def _holder(config: BrokerConfig) -> tuple[AbstractConnection, str, str]:
    """A session holding a lease: (its connection, its lease id, its holder token)."""
    connection = await connect_any(config.amqp_vhost_urls)
    lease = uuid.uuid4().hex
    await declare_session_lease(await connection.channel(), config.topology, lease)
    return connection, lease, holder_token(lease, connection)


async def _settled(resolver: InDoubt, token: str) -> Verdict:
    await asyncio.sleep(0.6)  # past the window in which one probe answers every retry
    return await resolver.settle(token)


async def test_a_retry_waits_while_its_holders_connection_lives(
    config: BrokerConfig, own: AbstractConnection
) -> None:
    holder, _, token = await _holder(config)
    resolver = _resolver(config, own)
    assert await resolver.settle(token) is Verdict.WAIT
    assert await _settled(resolver, token) is Verdict.WAIT
    await holder.close()  # the node closed the holder's connection: nothing more lands
    assert await _settled(resolver, token) is Verdict.ROUTE
    assert resolver.verdicts == {"route": 1, "wait": 2}


async def test_a_holder_whose_node_does_not_answer_is_asked_after_on_our_node(
    config: BrokerConfig, own: AbstractConnection
) -> None:
    # The token names a node that does not answer (port 1 of the real host); the lease is
    # on the real node, which this router is connected to: it is asked there.
    holder, lease, _ = await _holder(config)
    token = f"{lease}@127.0.0.1:1"
    resolver = _resolver(config, own, str(URL(config.amqp_vhost_urls[0]).with_port(1)))
    assert await resolver.settle(token) is Verdict.WAIT
    await holder.close()
    assert await _settled(resolver, token) is Verdict.ROUTE


async def test_a_holder_nobody_can_ask_after_is_waited_for(config: BrokerConfig) -> None:
    holder, _, token = await _holder(config)
    try:
        resolver = InDoubt([], session_prefix="trust.session.", own_connection=lambda: None)
        assert await resolver.settle(token) is Verdict.WAIT
    finally:
        await holder.close()


async def test_a_claim_names_its_holder_and_passes_only_from_the_holder_resolved(
    store: RedisStore,
) -> None:
    env, now = sign_envelope(), wall_clock_ms()
    digest = "d" * 64
    first = await store.claim_at(env, digest, False, now, "a@n1")
    assert first.claim is Claim.NEW
    retry = await store.claim_at(env, digest, True, now + 5, "b@n2")
    assert (retry.claim, retry.first_ms, retry.holder) == (Claim.RETRY, now, "a@n1")
    assert await store.hand_over(env, digest, "a@n1", "a@n1") == HandedOver(HandOver.OK)  # a's
    assert await store.hand_over(env, digest, "a@n1", "b@n2") == HandedOver(HandOver.OK)
    # Another router resolved a as well, a moment later: b holds it now.
    assert await store.hand_over(env, digest, "a@n1", "c@n3") == HandedOver(HandOver.HELD, "b@n2")
    assert (await store.claim_at(env, digest, True, now + 9, "c@n3")).holder == "b@n2"
    assert await store.hand_over(env, "e" * 64, "b@n2", "c@n3") == HandedOver(HandOver.REPLAY)
    await store.hand_over(env, digest, "b@n2", "")  # released (a store outage at b)
    assert (await store.claim_at(env, digest, True, now + 9, "c@n3")).holder == ""
    result = Finish(
        action="deliver", clean=True, delivered=True, size=100,
        gate_failed=False, outside_manifest=False,
    )  # fmt: skip
    await store.finish(env, digest, result, Policy(), now + 10)
    assert await store.hand_over(env, digest, "", "c@n3") == HandedOver(HandOver.DONE)
    assert (await store.claim_at(env, digest, True, now + 11, "c@n3")).claim is Claim.DONE


# -- the in-doubt list: outcomes whose commit got no commit-ok (broker/store/indoubt.py) --


def _doubt(message_id: str, at_ms: int) -> InDoubtEntry:
    return InDoubtEntry(
        id=message_id, sender="did:key:zSender", action="deliver", exchange="trust.deliver",
        routing_key="did:key:zRecipient", trace_id=uuid.uuid4().hex, holder="s1@n1",
        at_ms=at_ms, digest="d" * 64,
    )  # fmt: skip


async def test_the_in_doubt_list_shows_what_became_of_each_message(
    config: BrokerConfig, store: RedisStore
) -> None:
    """2,000 outcomes of commits in doubt (a few node deaths' worth): those whose message
    came back and was routed once read 'came back', those still only claimed (the ack took
    effect) 'unresolved', those without a claim any more 'expired', undecodable bytes
    'untracked'; newest first, and the CLI shows the same."""
    now = wall_clock_ms()
    result = Finish(
        action="deliver", clean=True, delivered=True, size=100,
        gate_failed=False, outside_manifest=False,
    )  # fmt: skip
    entries, expected = [], Counter[str]()
    for n in range(2_000):
        env = sign_envelope()
        digest = f"{n:064x}"
        if n % 4 == 0:  # came back: redelivered, routed once, finished
            await store.claim_at(env, digest, False, now, "s1@n1")
            await store.finish(env, digest, result, Policy(), now + 1)
            expected["came back"] += 1
        elif n % 4 in (1, 2):  # the ack took effect: nobody saw it again
            await store.claim_at(env, digest, False, now, "s1@n1")
            expected["unresolved"] += 1
        else:
            expected["expired"] += 1
        entries.append(_doubt(env.id, now + n))
    entries.append(_doubt("", now + 2_000))
    expected["untracked"] += 1
    await store.note_in_doubt(entries)

    listed = await store.in_doubt(limit=10_000)
    assert Counter(entry["status"] for entry in listed) == expected
    newest_first = sorted((e["at_ms"] for e in entries), reverse=True)
    assert [entry["at_ms"] for entry in listed] == newest_first
    newest = await store.in_doubt(limit=100)
    assert [e["id"] for e in newest] == [e["id"] for e in reversed(entries[-100:])]

    done = await cli(config, "in-doubt", "--unresolved", "--limit", "5000", "--json")
    shown = as_json(done)
    assert len(shown) == expected["unresolved"]
    assert {entry["status"] for entry in shown} == {"unresolved"}
    text = await cli(config, "in-doubt", "--limit", "10")
    assert "10 shown" in text.stdout and "untracked" in text.stdout
    refused = await cli(config, "in-doubt", "--limit", "0", check=False)
    assert refused.returncode != 0 and "--limit must be at least 1" in refused.stderr
