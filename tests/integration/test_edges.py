"""The broker's edges, attacked through documented interfaces only (issue 11): the
negotiator is no confused deputy, one agent cannot exhaust the handshake for another,
and the recipient gets exactly the bytes that were verified."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import uuid
from typing import Any

import aio_pika
import orjson
import pytest

from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.envelope import (
    Envelope,
    decode_envelope,
    encode_envelope,
    sign_envelope,
    signature_valid,
)
from broker.core.identity import AgentKey
from broker.core.records import Record
from broker.ops.reading import read_blocked, read_escalations
from broker.reasons import BLOCK_REASONS
from broker.router import Router
from broker.router.negotiation import DIRECT_REPLY_TO
from broker.store.redis import RedisStore
from tests.integration.conftest import Agent, AgentFactory
from tests.integration.test_review import blocked_with, raw_deliveries, wait_for
from tests.integration.trust import make_level


async def queue_depth(config: BrokerConfig, queue: str) -> int:
    connection = await aio_pika.connect(config.amqp_vhost_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)


async def requests(
    agent: Agent, bodies: list[bytes], *, reply_to: str, user_id: str | None
) -> list[bytes]:
    """Publish `bodies` on trust.handshake with the agent's own login and collect the
    replies that come back on direct reply-to (none is expected for another reply_to)."""
    replies: list[bytes] = []
    done = asyncio.Event()
    connection = await aio_pika.connect(agent.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=False)

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            replies.append(message.body)
            if len(replies) >= len(bodies):
                done.set()

        direct = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await direct.consume(on_reply, no_ack=True)
        exchange = await channel.get_exchange("trust.handshake", ensure=False)
        for body in bodies:
            message = aio_pika.Message(
                body, reply_to=reply_to, correlation_id=uuid.uuid4().hex, user_id=user_id
            )
            await exchange.publish(message, routing_key="")
        if reply_to == DIRECT_REPLY_TO:
            await asyncio.wait_for(done.wait(), 300)
        else:
            await asyncio.sleep(1.0)  # nothing is expected back; give the router its chance
    return replies


async def hellos(agent: Agent, count: int, *, reply_to: str, user_id: str | None) -> list[bytes]:
    body = orjson.dumps({"op": "hello", "agent": agent.did})
    return await requests(agent, [body] * count, reply_to=reply_to, user_id=user_id)


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
    assert router.metrics.replies_refused._value.get() == 3
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
    bounded = router.metrics.challenges_bounded.labels("agent")._value.get()
    assert bounded >= 10_200 - 8
    assert router.metrics.challenges_bounded.labels("global")._value.get() == 0
    # The flooder's own latest challenge still works: it is never locked out either.
    assert (await flooder.client.handshake(expected_broker=broker_key.did)).agent == flooder.did


# -- 3. exactly what was signed ------------------------------------------------------------


def signed_bytes(sender: Agent, recipient: Agent, body: Any) -> tuple[Envelope, bytes]:
    env = sign_envelope(
        sender.key, id=f"msg-{os.urandom(6).hex()}", recipient=recipient.did, kind="data",
        created_at=wall_clock_ms(), nonce=os.urandom(16).hex(), body=body,
    )  # fmt: skip
    return env, encode_envelope(env)


async def test_a_duplicate_body_is_blocked_as_malformed_and_never_delivered(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    alice, bob = await agents(), await agents()
    await make_level(store, alice.client, AgentKey.generate(), "established")
    env, raw = signed_bytes(alice, bob, {"amount": 1})
    doubled = raw.replace(b'"body":{"amount":1}', b'"body":{"amount":1000},"body":{"amount":1}')
    assert doubled != raw
    # Signed over amount 1 and delivered byte for byte on 6a30867: a first-value parser
    # read 1000.
    await alice.client.publish_raw(doubled, message_id=env.id)
    [record] = await blocked_with(config, "malformed")
    assert record["error_field"] == "body"
    assert base64.b64decode(record["raw_b64"]) == doubled
    assert await raw_deliveries(bob, timeout=0.8) == []


async def test_the_recipient_gets_the_canonical_bytes_that_were_verified(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    alice, bob = await agents(), await agents()
    await make_level(store, alice.client, AgentKey.generate(), "established")
    env, canonical = signed_bytes(alice, bob, {"n": 1, "z": 0})
    # The same JSON value, spelled otherwise: 1.0 for 1, -0 for 0, keys unsorted, spaces.
    spelled = orjson.loads(canonical)
    text = orjson.dumps(dict(reversed(list(spelled.items()))), option=orjson.OPT_INDENT_2)
    text = text.replace(b'"n": 1', b'"n": 1.0').replace(b'"z": 0', b'"z": -0')
    assert text != canonical and orjson.loads(text) == spelled
    await alice.client.publish_raw(text, message_id=env.id)
    [delivered] = await raw_deliveries(bob, timeout=3.0)
    assert delivered.body == canonical  # on 6a30867: the sender's spelling, as sent
    decoded = decode_envelope(delivered.body)
    assert signature_valid(decoded) and decoded.signed_bytes == env.signing_bytes()


# -- fuzzing the real ingress and handshake queues -------------------------------------------


def fuzzed(seed: int, count: int, valid: bytes) -> list[bytes]:
    """Byte strings: random bytes, JSON of the wrong shape, and a valid envelope with
    bytes spliced in, cut short, or a member duplicated."""
    rng = random.Random(seed)
    out: list[bytes] = []
    shapes = [b"", b"{}", b"[]", b"null", b'{"op": 1}', b'"x"', b"1e999", b'{"a":' * 40]
    for i in range(count):
        pick = i % 4
        if pick == 0:
            out.append(rng.randbytes(rng.randrange(1, 300)))
        elif pick == 1:
            out.append(shapes[i % len(shapes)] + rng.randbytes(i % 3))
        elif pick == 2:
            cut = rng.randrange(len(valid))
            out.append(valid[:cut] + rng.randbytes(rng.randrange(0, 8)) + valid[cut + 1 :])
        else:
            member = rng.choice([b'"kind":"data",', b'"version":1,', b'"body":{},'])
            out.append(valid.replace(b"{", b"{" + member, 1))
    return out


def handshake_requests(seed: int, count: int, agent: str) -> list[bytes]:
    """JSON requests of every op with members of the wrong type, shape or content."""
    rng = random.Random(seed)
    values: list[Any] = [None, True, -1, 2**53, 1.5, "", "did:key:z6Mk", agent, "x" * 300,
                         [], {}, {"type": "trust-broker/presentation"}, [agent] * 3]  # fmt: skip
    documents: list[Any] = [
        {"type": "trust-broker/handshake-response", "challenge": "00" * 32, "agent": agent,
         "broker": rng.choice(values), "signed_at": 1, "signature": "A" * 86},
        {"type": "trust-broker/presentation", "id": "presentation-x", "agent": agent,
         "broker": "did:key:z6Mk", "created_at": 1, "documents": [{}], "signature": ""},
    ]  # fmt: skip
    out = []
    for i in range(count):
        request: dict[str, Any] = {"op": rng.choice(
            ["hello", "prove", "present", "standing", "HELLO", "", 7])}  # fmt: skip
        for name in ("agent", "resume", "response", "presentation", "kind", "payment"):
            if rng.random() < 0.5:
                request[name] = rng.choice(values + documents)
        out.append(orjson.dumps(request))
        if i % 10 == 0:
            out.append(orjson.dumps(request)[:-1] + b', "op": "hello"}')  # a duplicate key
    return out


async def test_fuzzed_bytes_on_ingress_and_handshake_are_answered_typed_and_traffic_flows(
    router: Router,
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    broker_key: AgentKey,
) -> None:
    alice, bob, mallory = await agents(), await agents(), await agents()
    await make_level(store, alice.client, AgentKey.generate(), "established")
    _, valid = signed_bytes(mallory, bob, {"n": 1})
    cases = fuzzed(11, 300, valid)
    for case in cases:
        await mallory.client.publish_raw(case)

    # Every one is recorded on the blocked stream (or delivered, for a splice that still
    # happens to be an authentic envelope: there is at most one, the valid one).
    async def settled() -> list[Record]:
        entries = await read_blocked(config, limit=2000, idle_timeout=0.5)
        return [e.record for e in entries]

    records = await wait_for(settled, len(cases) - 2, 60)
    assert len(records) >= len(cases) - 2
    reasons = {record["reason"] for record in records}
    assert reasons <= set(BLOCK_REASONS) - {"unparseable", "internal_error"}, reasons
    # The handshake queue answers each with a typed error, and keeps answering.
    answers = await requests(mallory, cases, reply_to=DIRECT_REPLY_TO, user_id=mallory.did)
    replies = [orjson.loads(answer) for answer in answers]
    assert len(replies) == len(cases)
    assert all(reply["op"] == "error" and reply["code"] for reply in replies), replies
    assert {reply["code"] for reply in replies} <= {"malformed", "request_too_large", "bad_did"}
    # Well-formed JSON requests of every op with hostile members: typed errors too.
    shaped = handshake_requests(13, 200, mallory.did)
    answers = await requests(mallory, shaped, reply_to=DIRECT_REPLY_TO, user_id=mallory.did)
    replies = [orjson.loads(answer) for answer in answers]
    assert len(replies) == len(shaped)
    for request, reply in zip(shaped, replies, strict=False):
        assert reply["op"] in ("error", "challenge", "standing", "presented"), (request, reply)
        if reply["op"] == "error":
            assert isinstance(reply["code"], str) and reply["code"], (request, reply)
    # Honest traffic still flows.
    assert (await alice.client.handshake(expected_broker=broker_key.did)).agent == alice.did
    sent = await alice.send(bob, {"still": "flowing"})
    got = await bob.receive_all(timeout=3.0)
    assert sent.id in [r.envelope.id for r in got]


def fuzzed_bodies(seed: int, count: int) -> list[tuple[str, bytes]]:
    """(content type, body) pairs for the console's JSON API and its forms."""
    rng = random.Random(seed)
    values: list[Any] = [None, True, 0, -0.0, 1e308, 2**63 - 1, "", "x" * 5000, [], {}]
    values += [[1, {}], {"a": {"b": [None]}}, "gates.max_envelope_bytes", "\u2028", "\x00"]
    out: list[tuple[str, bytes]] = []
    for i in range(count):
        pick = i % 5
        if pick == 0:
            out.append(("application/json", rng.randbytes(rng.randrange(0, 200))))
        elif pick == 1:
            fields = {name: rng.choice(values) for name in ("why", "penalise", "path", "value")
                      if rng.random() < 0.7}  # fmt: skip
            out.append(("application/json", orjson.dumps(fields)))
        elif pick == 2:
            out.append(("application/json", b'{"why": "a", "why": "b", "penalise": true}'))
        elif pick == 3:
            out.append(("application/json", orjson.dumps(rng.choice(values))))
        else:
            form = "&".join(
                f"{rng.choice(['why', 'path', 'value', 'penalise', 'csrf', '%ZZ'])}="
                f"{rng.randbytes(rng.randrange(0, 40)).hex()}"
                for _ in range(rng.randrange(0, 6))
            )
            out.append(("application/x-www-form-urlencoded", form.encode()))
    return out


async def test_fuzzed_console_and_admin_api_bodies_get_typed_refusals_never_a_crash(
    router: Router, config: BrokerConfig, agents: AgentFactory
) -> None:
    import httpx

    from broker.console.app import create_app
    from broker.console.auth import Role, Users

    mallory = await agents()
    await mallory.client.publish_raw(b'{"not": "an envelope"}')
    [record] = await blocked_with(config, "malformed")
    users = (
        Users()
        .with_user("sam", Role.SECURITY, "sam-token-000000000000")
        .with_user("olga", Role.OPS, "olga-token-00000000000")
    )
    app = create_app(config, users)
    transport = httpx.ASGITransport(app=app)  # raises whatever the app fails to handle
    targets = [
        ("olga", "/api/policy"), ("olga", "/policy"),
        ("sam", f"/api/blocked/{record['trace_id']}/release"),
        ("sam", f"/blocked/{record['trace_id']}/release"),
        ("sam", f"/api/escalations/{uuid.uuid4().hex}/approve"),
        ("sam", "/api/blocked/not-a-trace/confirm"),
    ]  # fmt: skip
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        for index, (kind, body) in enumerate(fuzzed_bodies(7, 240)):
            who, path = targets[index % len(targets)]
            token = "sam-token-000000000000" if who == "sam" else "olga-token-00000000000"
            headers = {"Authorization": f"Bearer {token}", "Content-Type": kind}
            reply = await client.post(path, content=body, headers=headers)
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            assert reply.status_code < 500, (path, body, reply.text)
            if path.startswith("/api/") and reply.status_code >= 400:
                assert reply.json()["error"], reply.text
        dup = await client.post(
            "/api/policy",
            content=b'{"path": "gates.max_envelope_bytes", "value": 1, "value": 2, "why": "x"}',
            headers={"Authorization": "Bearer olga-token-00000000000"},
        )
        assert dup.status_code == 400 and "duplicate key 'value'" in dup.json()["error"]
    await app.state.console.store.close()  # no lifespan under ASGITransport
    assert set(statuses) <= {200, 303, 400, 404, 409, 422}, statuses
    # The record the fuzz aimed at is still there, unreleased, and the router still routes.
    assert [e.record["trace_id"] for e in await read_blocked(config, limit=10)] == [
        record["trace_id"]
    ]


async def test_a_presentation_id_is_single_use_per_presenter_so_nobody_burns_anothers(
    router: Router, agents: AgentFactory, broker_key: AgentKey
) -> None:
    from broker.core.presentation import PRESENTATION_TYPE
    from broker.core.signing import sign_document

    mallory, victim = await agents(), await agents()

    def presentation(agent: Agent) -> bytes:
        document = {
            "type": PRESENTATION_TYPE, "id": "presentation-predictable-1", "agent": agent.did,
            "broker": broker_key.did, "created_at": wall_clock_ms(),
            "documents": [{"type": "not-a-document"}],
        }  # fmt: skip
        return orjson.dumps({"op": "present", "presentation": sign_document(agent.key, document)})

    [first] = await requests(mallory, [presentation(mallory)] * 1, reply_to=DIRECT_REPLY_TO,
                             user_id=mallory.did)  # fmt: skip
    assert orjson.loads(first)["op"] == "presented"
    [again] = await requests(mallory, [presentation(mallory)], reply_to=DIRECT_REPLY_TO,
                             user_id=mallory.did)  # fmt: skip
    assert orjson.loads(again)["code"] == "presentation_replay"
    # The victim's presentation with the id mallory used first is still its own to use.
    [theirs] = await requests(victim, [presentation(victim)], reply_to=DIRECT_REPLY_TO,
                              user_id=victim.did)  # fmt: skip
    assert orjson.loads(theirs)["op"] == "presented"


def forged_pid(node: bytes) -> str:
    pid = b"\x83Xv" + len(node).to_bytes(2, "big") + node + bytes(8) + (1).to_bytes(4, "big")
    return base64.b64encode(pid).decode()


@pytest.mark.parametrize(
    "reply_to",
    [
        "amq.rabbitmq.reply-to.bogus",
        "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAy.AAAAAAAAAAAAAAAAAAAAAA==",
        "amq.rabbitmq.reply-to." + "x" * 200,
        # Well-formed, but no node of this cluster has the label: RabbitMQ closed the
        # negotiator's connection (INTERNAL_ERROR), ending the router's session.
        "amq.rabbitmq.reply-to." + forged_pid(b"reply@12345678") + ".vsRkc+xiOOmiUrOfZakVtw==",
        "amq.rabbitmq.reply-to." + forged_pid(b"rabbit@elsewhere") + ".vsRkc+xiOOmiUrOfZakVtw==",
    ],
)
async def test_a_forged_direct_reply_to_name_never_stops_the_negotiator(
    router: Router, agents: AgentFactory, broker_key: AgentKey, reply_to: str
) -> None:
    attacker, honest = await agents(), await agents()
    # Each of these makes RabbitMQ drop the reply (or fail the publish): the negotiator
    # must keep its channel and answer the next agent.
    sessions = router.sessions
    assert await hellos(attacker, 5, reply_to=reply_to, user_id=attacker.did) == []
    proof = await honest.client.handshake(expected_broker=broker_key.did)
    assert proof.agent == honest.did
    assert router.sessions == sessions  # no session was lost to a closed connection
    assert router._negotiation is not None and router._negotiation.refused_replies == 5


async def test_a_released_message_is_delivered_in_the_canonical_form_that_was_verified(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    from broker.ops.blocked import release_blocked

    newcomer, bob = await agents(), await agents()  # a new key: its messages are blocked
    env, canonical = signed_bytes(newcomer, bob, {"n": 1})
    spelled = orjson.dumps(orjson.loads(canonical), option=orjson.OPT_INDENT_2)
    spelled = spelled.replace(b'"n": 1', b'"n": 1.0')
    await newcomer.client.publish_raw(spelled, message_id=env.id)
    [record] = await blocked_with(config, "insufficient_trust")
    assert base64.b64decode(record["raw_b64"]) == spelled  # the audit keeps what arrived
    await release_blocked(config, store, record["trace_id"], "rita", "a partner we know")
    [delivered] = await raw_deliveries(bob, timeout=3.0)
    assert delivered.body == canonical
