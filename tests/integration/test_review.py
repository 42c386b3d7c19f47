"""Reviewing blocks and escalations on the real servers: each decision happens at most
once, is recorded, and delivers only bytes whose signature still verifies."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.envelope import PaymentIntent, encode_envelope
from broker.core.identity import AgentKey
from broker.core.policy import PaymentCaps
from broker.core.records import BlockedFilter, Record
from broker.errors import ReviewError
from broker.ops.blocked import confirm_blocked, release_blocked
from broker.ops.escalations import (
    approve_escalation,
    expire_escalations,
    reject_escalation,
    request_evidence,
    rescore_escalation,
)
from broker.ops.reading import read_blocked, read_escalations, tail_blocked
from broker.ops.sweeper import run_sweeper, sweep_once
from broker.peerview import describe_peer
from broker.router import Router
from broker.sdk.keyfile import save_key
from broker.store.redis import RedisStore
from tests.integration.conftest import Agent, AgentFactory
from tests.integration.test_cli_flow import cli_env
from tests.integration.trust import make_level

HOUR_MS = 3_600_000


def usd(amount: str) -> dict[str, Any]:
    return {"kind": "payment", "payment": PaymentIntent(currency="USD", amount=amount)}


async def wait_for(read: Any, count: int, timeout: float = 8.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = await read()
        if len(found) >= count or time.monotonic() > deadline:
            return list(found)
        await asyncio.sleep(0.1)


async def blocked_with(
    config: BrokerConfig, reason: str, count: int = 1, timeout: float = 8.0
) -> list[Record]:
    async def read() -> list[Record]:
        entries = await read_blocked(config, limit=1000, idle_timeout=0.3)
        return [e.record for e in entries if e.record["reason"] == reason]

    return await wait_for(read, count, timeout)


async def escalations(config: BrokerConfig, count: int = 1) -> list[Record]:
    async def read() -> list[Record]:
        return await read_escalations(config)

    return await wait_for(read, count)


async def raw_deliveries(agent: Agent, timeout: float = 1.0) -> list[aio_pika.abc.AbstractMessage]:
    """What reached the agent's queue, exactly as RabbitMQ holds it (bytes and headers)."""
    connection = await aio_pika.connect(agent.amqp_url)
    got: list[aio_pika.abc.AbstractMessage] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(f"agent.{agent.did}", ensure=False)
        async with queue.iterator(timeout=timeout) as stream:
            try:
                async for message in stream:
                    got.append(message)
                    await message.ack()
            except TimeoutError:
                pass
    return got


async def a_block(
    store: RedisStore,
    agents: AgentFactory,
    config: BrokerConfig,
    level: str = "new",
    **options: Any,
) -> tuple[Agent, Agent, Any, Record]:
    """A sender at `level` whose message to a fresh recipient was blocked."""
    sender, recipient = await agents(), await agents()
    await make_level(store, sender.client, AgentKey.generate(), level)
    sent = await sender.send(recipient, {"task": "summarise"}, **options)
    records = await blocked_with(
        config, "insufficient_trust" if level == "new" else "payment_trust_threshold"
    )
    record = next(r for r in records if r["message_id"] == sent.id)
    return sender, recipient, sent, record


async def an_escalation(
    store: RedisStore, agents: AgentFactory, config: BrokerConfig, amount: str = "150.00"
) -> tuple[Agent, Agent, Any, Record]:
    """An established sender's payment over its per-message cap, waiting for a human."""
    sender, recipient = await agents(), await agents()
    await make_level(store, sender.client, AgentKey.generate(), "established")
    sent = await sender.send(recipient, {"invoice": 7}, **usd(amount))

    async def this_one() -> list[Record]:
        return [r for r in await read_escalations(config) if r["message_id"] == sent.id]

    [record] = await wait_for(this_one, 1)
    assert record["reason"] == "payment_cap_exceeded"
    return sender, recipient, sent, record


async def reputation(store: RedisStore, did: str) -> float:
    view = await describe_peer(store, did, wall_clock_ms())
    return float(view["dimensions"]["reputation"])


# -- blocked ---------------------------------------------------------------------------------


async def test_release_delivers_the_original_bytes_exactly_once(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    _, recipient, sent, record = await a_block(store, agents, config)
    trace = record["trace_id"]

    review = await release_blocked(config, store, trace, "rita", "known partner, new key")
    assert (review["action"], review["reviewer"], review["state"]) == ("release", "rita", "done")

    got = await raw_deliveries(recipient)
    assert len(got) == 1
    message = got[0]
    assert message.body == base64.b64decode(record["raw_b64"]) == encode_envelope(sent)
    assert message.message_id == sent.id
    headers = message.headers or {}
    assert headers["x-trust-released-by"] == "rita"
    assert headers["x-trust-trace-id"] == trace
    assert str(headers["x-trust-reasons"]).split(",")[0] == "released"

    with pytest.raises(ReviewError) as again:
        await release_blocked(config, store, trace, "sam", "twice?")
    assert again.value.code == "already_decided" and "rita" in str(again.value)
    assert await raw_deliveries(recipient, timeout=0.5) == []

    stored = await store.review(trace)
    assert stored is not None and stored["why"] == "known partner, new key"
    log = await store.review_log(trace)
    assert [(e["reviewer"], e["outcome"]) for e in log] == [("rita", "done"), ("sam", "refused")]


async def test_release_refuses_bytes_that_are_not_what_the_sender_signed(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    _, recipient, sent, record = await a_block(store, agents, config)
    raw = base64.b64decode(record["raw_b64"]).replace(b'"summarise"', b'"wire funds"')
    forged_id = uuid.uuid4().hex
    forged = {**record, "trace_id": forged_id, "raw_b64": base64.b64encode(raw).decode()}
    connection = await aio_pika.connect(config.amqp_vhost_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(orjson.dumps(forged)), routing_key=config.topology.blocked_stream
        )

    with pytest.raises(ReviewError) as refused:
        await release_blocked(config, store, forged_id, "rita", "looks fine")
    assert refused.value.code == "bad_signature"
    assert "signature" in str(refused.value)
    assert await store.review(forged_id) is None  # refused before any claim
    assert (await store.review_log(forged_id))[0]["code"] == "bad_signature"

    assert await raw_deliveries(recipient, timeout=0.5) == []
    assert sent.id == forged["message_id"]


async def test_replays_and_unknown_recipients_are_never_released(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    alice, bob = await agents(), await agents()
    await make_level(store, alice.client, AgentKey.generate(), "established")
    env = alice.client.envelope(bob.did, {"once": True})
    await alice.client.publish_raw(encode_envelope(env))
    # A different message reusing the id (the same bytes again would be idempotent).
    reused = alice.client.envelope(bob.did, {"once": False}, message_id=env.id)
    await alice.client.publish_raw(encode_envelope(reused))
    replay = (await blocked_with(config, "replay"))[0]
    with pytest.raises(ReviewError) as refused:
        await release_blocked(config, store, replay["trace_id"], "rita", "false positive?")
    assert refused.value.code == "not_releasable"
    assert len(await raw_deliveries(bob)) == 1  # the original only
    with pytest.raises(ReviewError) as unfair:
        await confirm_blocked(config, store, replay["trace_id"], "rita", "x", penalise=True)
    assert unfair.value.code == "not_penalisable"

    await alice.send(AgentKey.generate().did, {"to": "nobody"})
    unknown = (await blocked_with(config, "unknown_recipient"))[0]
    with pytest.raises(ReviewError) as nowhere:
        await release_blocked(config, store, unknown["trace_id"], "rita", "deliver anyway")
    assert nowhere.value.code == "unknown_recipient"


async def test_confirm_with_penalise_records_a_verified_failure_once(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    sender, _, _, record = await a_block(store, agents, config, "probation", **usd("5.00"))
    before = await reputation(store, sender.did)

    review = await confirm_blocked(
        config, store, record["trace_id"], "rita", "payment probe", penalise=True
    )
    assert review["penalised"] == sender.did and review["action"] == "confirm"
    after = await reputation(store, sender.did)
    assert after < before

    with pytest.raises(ReviewError) as again:
        await confirm_blocked(config, store, record["trace_id"], "sam", "again", penalise=True)
    assert again.value.code == "already_decided"
    assert await reputation(store, sender.did) == pytest.approx(after)
    with pytest.raises(ReviewError):  # a confirmed block cannot be released afterwards
        await release_blocked(config, store, record["trace_id"], "sam", "changed my mind")


async def test_blocked_records_are_read_by_time(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    _, _, first, _ = await a_block(store, agents, config)
    await asyncio.sleep(1.2)
    since = wall_clock_ms()
    sender, recipient = await agents(), await agents()
    second = await sender.send(recipient, {"later": True})
    await blocked_with(config, "insufficient_trust", 2)

    later = await tail_blocked(config, BlockedFilter(since_ms=since), offset="first")
    assert [e.record["message_id"] for e in later] == [second.id]
    earlier = await tail_blocked(config, BlockedFilter(until_ms=since))
    assert [e.record["message_id"] for e in earlier] == [first.id]

    iso = datetime.fromtimestamp(since / 1000, tz=UTC).isoformat()
    rows = as_json(await cli(config, "blocked", "tail", "--since", iso, "--json"))
    assert [row["message_id"] for row in rows] == [second.id]
    rows = as_json(await cli(config, "blocked", "--until", iso, "--json"))
    assert [row["message_id"] for row in rows] == [first.id]
    rows = as_json(await cli(config, "blocked", "tail", "--recipient", recipient.did, "--json"))
    assert [row["message_id"] for row in rows] == [second.id]


# -- escalations -------------------------------------------------------------------------------


async def test_approve_delivers_exactly_once_and_takes_it_off_the_queue(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    _, recipient, sent, record = await an_escalation(store, agents, config)
    _, _, _, other = await an_escalation(store, agents, config)
    trace = record["trace_id"]

    review = await approve_escalation(config, store, trace, "rita", "invoice checked")
    assert (review["action"], review["state"]) == ("approve", "done")
    got = await raw_deliveries(recipient)
    assert [m.body for m in got] == [encode_envelope(sent)]
    assert (got[0].headers or {})["x-trust-approved-by"] == "rita"
    assert [r["trace_id"] for r in await escalations(config)] == [other["trace_id"]]

    with pytest.raises(ReviewError) as again:
        await approve_escalation(config, store, trace, "sam", "twice?")
    assert again.value.code == "already_decided"
    assert await raw_deliveries(recipient, timeout=0.5) == []


async def test_concurrent_approvals_deliver_once(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    _, recipient, _, record = await an_escalation(store, agents, config)
    results = await asyncio.gather(
        *(approve_escalation(config, store, record["trace_id"], f"r{i}", "go") for i in range(4)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(isinstance(r, dict | ReviewError) for r in results)
    assert len(await raw_deliveries(recipient)) == 1


async def test_reject_blocks_it_and_records_a_failure(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    sender, recipient, sent, record = await an_escalation(store, agents, config)
    before = await reputation(store, sender.did)

    review = await reject_escalation(config, store, record["trace_id"], "rita", "not our vendor")
    assert review["penalised"] == sender.did
    assert await read_escalations(config) == []
    rejected = (await blocked_with(config, "escalation_rejected"))[0]
    assert (rejected["trace_id"], rejected["message_id"]) == (record["trace_id"], sent.id)
    assert rejected["raw_b64"] == record["raw_b64"]
    assert "not our vendor" in rejected["decision"]["remediation"]
    assert await reputation(store, sender.did) < before
    assert await raw_deliveries(recipient, timeout=0.5) == []


async def test_undecided_escalations_expire_to_blocked(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    _, recipient, _, first = await an_escalation(store, agents, config)
    await an_escalation(store, agents, config)
    received = first["received_ms"]
    assert received is not None

    assert await expire_escalations(config, store, received + 60_000) == []
    assert len(await escalations(config, 2)) == 2

    expired = await expire_escalations(config, store, received + HOUR_MS + 60_000)
    assert len(expired) == 2 and {r["action"] for r in expired} == {"expire"}
    assert await read_escalations(config) == []
    records = await blocked_with(config, "escalation_expired", 2)
    assert {r["trace_id"] for r in records} == {r["trace_id"] for r in expired}
    with pytest.raises(ReviewError):
        await approve_escalation(config, store, first["trace_id"], "rita", "too late")
    assert await raw_deliveries(recipient, timeout=0.5) == []

    # Nobody decided it, so a reviewer may still release it from the stream: once.
    review = await release_blocked(config, store, first["trace_id"], "rita", "missed it")
    assert review["action"] == "release"
    assert len(await raw_deliveries(recipient)) == 1
    with pytest.raises(ReviewError) as again:
        await release_blocked(config, store, first["trace_id"], "sam", "again")
    assert again.value.code == "already_decided"


async def test_evidence_request_then_rescore_delivers_once_the_sender_qualifies(
    router: Router,
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    broker_key: AgentKey,
) -> None:
    sender, recipient, sent, record = await an_escalation(store, agents, config)
    trace = record["trace_id"]

    request = await request_evidence(config, store, broker_key, trace, "rita", "post a bond")
    asked = await sender.receive_all()
    assert [r.envelope.id for r in asked] == [request.id]
    envelope = asked[0].envelope  # the SDK verified the broker's signature
    assert envelope.sender == broker_key.did and envelope.kind == "request"
    assert envelope.body["type"] == "trust-broker/evidence-request"
    assert (envelope.body["trace_id"], envelope.body["message_id"]) == (trace, sent.id)
    assert envelope.body["reason"] == "post a bond"
    assert trace in await store.awaiting_evidence()

    still = await rescore_escalation(config, store, trace, wall_clock_ms())
    assert not still.delivered and still.decision.reasons[0] == "payment_cap_exceeded"
    assert len(await escalations(config)) == 1

    policy = await store.load_policy()
    caps = PaymentCaps(established_per_message=200, established_per_day=500)
    await store.save_policy(policy.model_copy(update={"caps": caps}))
    sweep = await sweep_once(config, store, wall_clock_ms())
    # (A router's own sweeper may have been first; either way it is delivered once.)
    assert all(r.delivered for r in sweep.rescored)
    got = await raw_deliveries(recipient)
    assert [m.body for m in got] == [encode_envelope(sent)]
    assert str((got[0].headers or {})["x-trust-reasons"]).split(",")[0] == "payment_within_caps"
    assert await read_escalations(config) == []
    assert await store.awaiting_evidence() == {}
    review = await store.review(trace)
    assert review is not None and review["action"] == "rescore"
    assert (await sweep_once(config, store, wall_clock_ms())).rescored == []


async def test_the_sweeper_expires_escalations_on_its_own(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    _, _, _, record = await an_escalation(store, agents, config)
    stop = asyncio.Event()
    sweeper = asyncio.create_task(
        run_sweeper(config, store, stop, 0.2, clock=lambda: wall_clock_ms() + 2 * HOUR_MS)
    )
    try:
        # Up to one lock period if a router's own sweeper took this interval's turn.
        expired = await blocked_with(config, "escalation_expired", timeout=20.0)
    finally:
        stop.set()
        await asyncio.wait_for(sweeper, 5)
    assert [r["trace_id"] for r in expired] == [record["trace_id"]]
    review = await store.review(record["trace_id"])
    assert review is not None and review["reviewer"] == "sweeper"


async def test_an_escalation_returned_often_goes_back_as_a_fresh_copy(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    # Quorum queues count every return; RabbitMQ >= 4.0 drops a message past its
    # delivery limit (20 by default), so listing and sweeping must not run it up.
    _, _, _, record = await an_escalation(store, agents, config)
    for _ in range(11):
        await read_escalations(config)
    assert await expire_escalations(config, store, wall_clock_ms()) == []
    connection = await aio_pika.connect(config.amqp_vhost_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(config.topology.escalations_queue, ensure=False)
        message = await queue.get(no_ack=False)
        assert (message.headers or {}).get("x-delivery-count", 0) == 0
        assert orjson.loads(message.body) == record
        assert message.message_id == record["trace_id"]
        await message.nack(requeue=True)
    assert [r["trace_id"] for r in await read_escalations(config)] == [record["trace_id"]]


# -- the command line --------------------------------------------------------------------------


async def cli(
    config: BrokerConfig, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "broker", "--log-level", "WARNING", *args]
    environment = {**cli_env(config), **(env or {})}
    for name in ("USER", "LOGNAME"):  # no implicit reviewer: tests name one
        environment.pop(name, None)
    done = await asyncio.to_thread(
        subprocess.run, cmd, env=environment, capture_output=True, text=True, timeout=60
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return orjson.loads(done.stdout)


async def test_every_review_command_from_the_command_line(
    router: Router,
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    broker_key: AgentKey,
    tmp_path: Path,
) -> None:
    _, recipient, sent, block = await a_block(store, agents, config)
    _, _, _, other_block = await a_block(store, agents, config)
    who = ("--reviewer", "rita")

    rows = as_json(await cli(config, "blocked", "tail", "--reason", "insufficient_trust", "--json"))
    assert {row["trace_id"] for row in rows} == {block["trace_id"], other_block["trace_id"]}
    followed = await cli(config, "blocked", "follow", "--offset", "first", "--count", "1", "--json")
    assert orjson.loads(followed.stdout.splitlines()[0])["trace_id"] == block["trace_id"]

    shown = await cli(config, "blocked", "show", block["trace_id"])
    for expected in ("insufficient_trust", "remediation", "identity", "#", "signature  valid",
                     "body       (hidden", "not reviewed"):  # fmt: skip
        assert expected in shown.stdout, expected
    assert "summarise" not in shown.stdout
    detail = as_json(await cli(config, "blocked", "show", block["trace_id"], "--body", "--json"))
    assert detail["envelope"]["body"] == {"task": "summarise"}

    # No --reviewer: the configured name (TRUST_REVIEWER) is recorded.
    named = {"TRUST_REVIEWER": "rita"}
    released = as_json(await cli(config, "blocked", "release", block["trace_id"], "--why",
                                 "false positive", "--json", env=named))  # fmt: skip
    assert released["reviewer"] == "rita"
    again = await cli(config, "blocked", "release", block["trace_id"], *who, "--why", "again",
                      check=False)  # fmt: skip
    assert again.returncode == 1 and "already decided" in again.stderr
    assert [m.body for m in await raw_deliveries(recipient)] == [encode_envelope(sent)]
    confirmed = as_json(await cli(config, "blocked", "confirm", other_block["trace_id"], *who,
                                  "--why", "spam", "--penalise", "--json"))  # fmt: skip
    assert confirmed["penalised"] == other_block["sender"]

    key_file = tmp_path / "broker.key"
    save_key(key_file, broker_key)
    with_key = {"TRUST_BROKER_KEY": str(key_file)}
    _, _, _, first = await an_escalation(store, agents, config)
    _, _, _, second = await an_escalation(store, agents, config)
    _, _, _, third = await an_escalation(store, agents, config)
    for _ in range(3):  # a router's own sweeper may hold some for a moment
        listed = as_json(await cli(config, "escalations", "list", "--json"))
        if len(listed) == 3:
            break
    assert len(listed) == 3 and all("raw_b64" not in row for row in listed)
    text = await cli(config, "escalations")
    assert "payment_cap_exceeded" in text.stdout and "remediation" in text.stdout

    await cli(config, "escalations", "request-evidence", first["trace_id"], *who,
              "--why", "post a bond", env=with_key)  # fmt: skip
    pending = await cli(config, "escalations", "rescore", first["trace_id"], *who, check=False)
    assert pending.returncode == 3 and "still pending" in pending.stdout
    await cli(config, "escalations", "approve", first["trace_id"], *who, "--why", "ok")
    await cli(config, "escalations", "reject", second["trace_id"], *who, "--why", "no")
    expired = as_json(
        await cli(config, "escalations", "expire", "--older-than", "0", *who, "--json")
    )
    assert [r["trace_id"] for r in expired] == [third["trace_id"]]
    assert await read_escalations(config) == []
    shown = await cli(config, "blocked", "show", second["trace_id"])
    assert "escalation_rejected" in shown.stdout and "reject by rita" in shown.stdout
