"""Every agent-side operation of the SDK from the command line (over AMQP, with the
agent's own login), the broker telling an agent its standing and nobody else, and the
one-line errors a new user meets."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from aiormq.exceptions import ChannelPreconditionFailed

from broker.config import BrokerConfig, with_vhost
from broker.core.identity import AgentKey
from broker.router import Router
from broker.sdk.client import AgentClient
from broker.sdk.keyfile import save_key
from broker.store.redis import RedisStore
from tests.integration.conftest import Agent, AgentFactory
from tests.integration.test_cli_flow import as_json, cli
from tests.integration.test_review import blocked_with
from tests.integration.trust import make_level


def key_file(tmp_path: Path, agent: Agent, name: str) -> str:
    path = tmp_path / f"{name}.key"
    save_key(path, agent.key)
    return str(path)


async def test_every_agent_operation_from_the_command_line(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory, tmp_path: Path
) -> None:
    alice, bob, carol = await agents(), await agents(), await agents()
    await make_level(store, carol.client, AgentKey.generate(), "established")
    a, b, c = (key_file(tmp_path, x, n) for x, n in ((alice, "a"), (bob, "b"), (carol, "c")))
    as_alice = ("--key", a, "--agent-url", alice.amqp_url)
    as_bob = ("--key", b, "--agent-url", bob.amqp_url)

    proof = as_json(await cli(config, "handshake", *as_alice, "--json"))
    assert proof["agent"] == alice.did and proof["standing"]["reasons"]["identity"][0] == (
        "identity_possession")  # fmt: skip
    standing = as_json(await cli(config, "standing", *as_alice, "--amount", "20", "--json"))
    assert (standing["did"], standing["action"]) == (alice.did, "block")
    assert standing["payment"] == {"currency": "USD", "amount": "20"}

    manifest = tmp_path / "manifest.json"
    done = as_json(await cli(config, "manifest", *as_alice, "--kinds", "data,request",
                             "--retention", "ephemeral", "--out", str(manifest), "--present",
                             "--json"))  # fmt: skip
    assert done["presented"]["accepted"] == [done["document"]["id"]]
    recorded = (await store.peer(alice.did, 0, cached=False)).manifest
    assert sorted(recorded.kinds if recorded else ()) == [
        "data", "request"]  # fmt: skip

    proposal, signed = tmp_path / "pact.json", tmp_path / "pact-signed.json"
    await cli(config, "pact", "propose", *as_alice, "--with", bob.did, "--kinds", "data",
              "--max-payment", "50", "--out", str(proposal))  # fmt: skip
    agreed = as_json(await cli(config, "pact", "countersign", *as_bob, str(proposal), "--out",
                               str(signed), "--present", "--json"))  # fmt: skip
    assert agreed["presented"]["refused"] == []
    assert (await store.pact(alice.did, bob.did)) is not None
    refused = await cli(config, "pact", "countersign", *as_alice, str(proposal), check=False)
    assert refused.returncode == 1 and f"not {alice.did}" in refused.stderr

    as_carol = ("--key", c, "--agent-url", carol.amqp_url)
    vouched = as_json(await cli(config, "vouch", *as_carol, "--for", alice.did, "--share", "0.2",
                                "--out", str(tmp_path / "vouch.json"), "--present",
                                "--json"))  # fmt: skip
    assert vouched["presented"]["accepted"] == [vouched["document"]["id"]]

    await make_level(store, alice.client, AgentKey.generate(), "probation")  # so it delivers
    sent = as_json(await cli(config, "send", *as_alice, "--to", bob.did, "--body", '{"n": 1}',
                             "--json"))  # fmt: skip
    assert sent["standing"]["action"] == "deliver"
    received = await cli(config, "receive", *as_bob, "--count", "1", "--timeout", "10", "--json")
    row = orjson.loads(received.stdout.splitlines()[0])
    assert row["id"] == sent["id"] and row["reasons"] and row["weakest"] and row["remediation"]
    reported = as_json(await cli(config, "report", *as_bob, "--message-id", row["id"],
                                 "--sender", alice.did, "--outcome", "success",
                                 "--json"))  # fmt: skip
    assert reported["about"] == row["id"]

    new = tmp_path / "a2.key"
    new_did = as_json(await cli(config, "keygen", "--out", str(new), "--json"))["did"]
    rotated = as_json(await cli(config, "rotate", *as_alice, "--new-key", str(new), "--out",
                                str(tmp_path / "rotation.json"), "--present",
                                "--json"))  # fmt: skip
    assert rotated["presented"]["accepted"] == [rotated["document"]["id"]]
    assert rotated["document"]["new"] == new_did


async def test_the_broker_tells_an_agent_its_standing_and_nobody_else(
    router: Router, config: BrokerConfig, agents: AgentFactory
) -> None:
    alice = await agents()
    mine = await alice.client.standing()
    assert mine["did"] == alice.did and mine["tier"] == "blocked"
    # The router's own (guest) login may not speak for alice: RabbitMQ checks user_id.
    async with AgentClient(alice.key, config.amqp_vhost_url) as impostor:
        assert not impostor.logged_in_as_self
        reply = await impostor._negotiate({"op": "standing", "agent": alice.did})
        assert reply["code"] == "standing_unauthenticated"
        assert impostor._connection is not None  # connected on entering the block
        channel = await impostor._connection.channel()
        exchange = await channel.get_exchange(config.topology.handshake_exchange, ensure=False)
        with pytest.raises(ChannelPreconditionFailed, match="user_id property set to"):
            await exchange.publish(aio_pika.Message(b"{}", user_id=alice.did), routing_key="")
    busy = await asyncio.gather(alice.client.standing(), alice.client.standing(),
                                return_exceptions=True)  # fmt: skip
    assert any(getattr(r, "code", "") == "standing_busy" for r in busy)  # one per 200 ms


async def test_errors_a_new_user_meets_are_one_line_with_the_fix(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory, tmp_path: Path
) -> None:
    alice, bob = await agents(), await agents()
    a = key_file(tmp_path, alice, "a")

    def one_line(done: Any, *expected: str) -> None:
        assert done.returncode == 1, done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        for text in expected:
            assert text in lines[0], (text, lines[0])

    # alice's key with bob's URL: RabbitMQ refuses alice's queue to bob's login.
    one_line(await cli(config, "receive", "--key", a, "--agent-url", bob.amqp_url, check=False),
             "refused", "--agent-url provisioned for this --key")  # fmt: skip
    url = ("--agent-url", alice.amqp_url)
    one_line(await cli(config, "send", "--key", a, *url, "--to", bob.did, "--amount", "lots",
                       check=False), "--amount 'lots'")  # fmt: skip
    one_line(await cli(config, "send", "--key", a, *url, "--to", bob.did, "--body", "{oops",
                       check=False), "--body is not JSON")  # fmt: skip
    one_line(await cli(config, "--redis-url", "redis://127.0.0.1:1/0", "peer", alice.did,
                       check=False), "redis://127.0.0.1:1/0", "servers start")  # fmt: skip
    unreachable = with_vhost("amqp://guest:guest@127.0.0.1:1/", config.vhost)
    one_line(await cli(config, "handshake", "--key", a, "--agent-url", unreachable, check=False),
             "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/")  # fmt: skip
    one_line(await cli(config, "blocked", "--reason", "insufficent_trust", check=False),
             "did you mean insufficient_trust?")  # fmt: skip

    # A message id finds its trace; a tampered envelope is INVALID first thing.
    sent = await alice.send(bob, {"task": "x"})
    [record] = await blocked_with(config, "insufficient_trust")
    traced = as_json(await cli(config, "trace", sent.id))
    assert traced["trace_id"] == record["trace_id"]
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(base64.b64decode(record["raw_b64"]).replace(b'"x"', b'"y"'))
    decoded = await cli(config, "decode", str(tampered), check=False)
    assert decoded.returncode == 1 and decoded.stdout.startswith("INVALID")

    expected = as_json(await cli(config, "evidence", "expect-code", "--subject", alice.did,
                                 "--codebase-hash", "sha256:ab12", "--json"))  # fmt: skip
    assert expected["codebase_hash"] == "sha256:ab12"
    history = await cli(config, "policy", "history")
    last = history.stdout.strip().splitlines()[-1]
    assert last.startswith("v1") and "(built in)" in last
    received = await cli(config, "receive", "--key", a, *url, "--timeout", "0.5")
    assert "INFO" not in received.stderr and "aio_pika" not in received.stderr


async def test_a_junk_escalation_entry_is_shown_as_such_and_never_crashes_a_reader(
    router: Router, config: BrokerConfig, store: RedisStore, broker_key: AgentKey,
    tmp_path: Path,
) -> None:  # fmt: skip
    from broker.console.app import create_app
    from broker.console.auth import Role, Users
    from broker.errors import ReviewError
    from broker.ops.escalations import approve_escalation, expire_escalations
    from broker.ops.reading import read_escalations

    junk = b'{"trace_id": "x", "note": "an operator\'s test publish"}'
    connection = await aio_pika.connect(config.amqp_vhost_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(junk), routing_key=config.topology.escalations_queue
        )
    [record] = await read_escalations(config)
    assert record["reason"] == "unparseable" and "trace_id" in record["unparseable"]
    listed = await cli(config, "escalations")  # crashed with KeyError 'decision'
    assert "unparseable" in listed.stdout and record["trace_id"] in listed.stdout
    rows = as_json(await cli(config, "escalations", "list", "--json"))
    assert rows[0]["unparseable"]

    app = create_app(config, Users().with_user("sam", Role.SECURITY, "sam-token-0123456789ab"))
    auth = {"Authorization": "Bearer sam-token-0123456789ab"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=auth) as api:
        page = await api.get("/escalations")
        assert page.status_code == 200 and "unparseable" in page.text
        refused = await api.post(f"/api/escalations/{record['trace_id']}/approve",
                                 json={"why": "looks fine"})  # fmt: skip
        assert refused.status_code == 409 and "never delivered" in refused.json()["error"]
    await app.state.console.store.close()

    try:
        await approve_escalation(config, store, record["trace_id"], "sam", "really")
    except ReviewError as exc:
        assert exc.code == "unparseable"
    # Nobody can decide it; it expires to the blocked stream with its bytes, like any other.
    [expired] = await expire_escalations(config, store, 2**42)
    assert expired["trace_id"] == record["trace_id"]
    [kept] = await blocked_with(config, "escalation_expired")
    assert base64.b64decode(kept["raw_b64"]) == junk
