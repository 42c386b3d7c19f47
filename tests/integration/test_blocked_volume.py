"""Security works a blocked stream of 100,000 records: show, release and confirm the
oldest, a middle and the newest record from the command line and from the console, read
pages from any offset, and see entries no router wrote for what they are.

The stream is built once for the module: real blocks from a real router at the start,
the middle and the end, and between them records published straight to the stream (a
copy of a real record with fresh ids and a mix of reasons, plus a few entries that are
not records at all)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from aio_pika.abc import HeadersType

from broker.amqp.management import ManagementAPI
from broker.amqp.streams import ReadStats
from broker.app import open_store
from broker.config import BrokerConfig
from broker.console.app import create_app
from broker.console.auth import Role, Users
from broker.core.identity import AgentKey
from broker.core.recorder import new_trace_id
from broker.core.records import BlockedFilter, Record
from broker.core.state import RecipientProfile
from broker.ops.find import find_blocked
from broker.ops.provision import agent_amqp_url, provision_agent, setup_vhost
from broker.ops.reading import read_blocked, tail_blocked
from broker.ops.sweeper import run_sweeper
from broker.router import Router
from broker.sdk.client import AgentClient
from tests.integration.test_cli_flow import cli_env

TOTAL = 100_000
# Building the stream takes a minute or two on a busy machine; every test here shares it.
pytestmark = pytest.mark.timeout(1800)
# At each position: CLI release, CLI confirm, console release, console confirm, a seek.
PER_POSITION = 5
JUNK = [b"not json at all", b"[1, 2, 3]", b'{"trace_id": "nope"}', b'{"reason": 7}']
TOKEN = "sam-security-token-for-the-volume-test"


@dataclass
class Volume:
    """The module's stream and what the tests look for in it."""

    config: BrokerConfig
    recipient_url: str
    recipient: str
    positions: dict[str, list[str]]  # oldest/middle/newest -> trace ids of real blocks
    replays: int


async def _real_blocks(config: BrokerConfig, recipient: str, store: Any) -> list[str]:
    """PER_POSITION messages from a newcomer, blocked by the router; their trace ids."""
    async with AgentClient(AgentKey.generate(), config.amqp_vhost_url) as newcomer:
        sent = [
            await newcomer.send(recipient, {"task": f"summarise {i}"}) for i in range(PER_POSITION)
        ]
    traces: list[str] = []
    deadline = time.monotonic() + 60
    for envelope in sent:
        while (trace := await store.trace_id_of(envelope.id)) is None:
            assert time.monotonic() < deadline, "the router did not decide in time"
            await asyncio.sleep(0.05)
        traces.append(trace)
    return traces


async def _template(config: BrokerConfig) -> Record:
    [entry] = await read_blocked(config, offset="first", limit=1)
    return entry.record


async def _fill(config: BrokerConfig, template: Record, count: int, seed: int) -> int:
    """Publish `count` records like `template` (1 in 100 a replay, a few junk entries);
    return how many replays. Unconfirmed for speed: the last one read back proves all."""
    connection = await aio_pika.connect(config.amqp_vhost_url)
    replays = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=False)
        stream = config.topology.blocked_stream
        last = ""
        headers: HeadersType
        for n in range(count):
            if n % 25_000 == 7:
                body, headers = JUNK[(seed + n) % len(JUNK)], {}
            else:
                last = new_trace_id(int(time.time() * 1000))
                reason = "replay" if n % 100 == 0 else template["reason"]
                replays += reason == "replay"
                record = {**template, "trace_id": last, "message_id": uuid.uuid4().hex,
                          "reason": reason}  # fmt: skip
                body, headers = orjson.dumps(record), {"x-trust-trace-id": last}
            await channel.default_exchange.publish(
                aio_pika.Message(body, headers=headers), routing_key=stream
            )
    deadline = time.monotonic() + 120
    while not await find_blocked(config, last, offset="last"):
        assert time.monotonic() < deadline, "the filler records did not all arrive"
        await asyncio.sleep(0.5)
    return replays


async def _build(base: BrokerConfig) -> Volume:
    name = f"volume-{uuid.uuid4().hex[:10]}"
    config = replace(base, vhost=name, key_prefix=f"{name}:")
    await setup_vhost(config)  # the admin's own login: there is no guest
    store, router_store = open_store(config), open_store(config)
    router = Router(config, router_store, broker_key=AgentKey.generate(), sweeper=run_sweeper)
    await router.start()
    try:
        recipient = AgentKey.generate()
        creds = await provision_agent(config, store, RecipientProfile(did=recipient.did))
        positions = {"oldest": await _real_blocks(config, recipient.did, store)}
        template = await _template(config)
        half = TOTAL // 2 - PER_POSITION
        started = time.monotonic()
        replays = await _fill(config, template, half, 0)
        positions["middle"] = await _real_blocks(config, recipient.did, store)
        replays += await _fill(config, template, TOTAL - half - 3 * PER_POSITION, 1)
        positions["newest"] = await _real_blocks(config, recipient.did, store)
        print(f"{TOTAL} records on the stream in {time.monotonic() - started:.0f} s")
    finally:
        await router.stop()
        await router_store.close()
        await store.close()
    return Volume(config, agent_amqp_url(config, creds), recipient.did, positions, replays)


async def _remove(config: BrokerConfig) -> None:
    await asyncio.to_thread(ManagementAPI(config.management_url).delete_vhost, config.vhost)
    store = open_store(config)
    try:
        await store.purge()
    finally:
        await store.close()


@pytest.fixture(scope="module")
def volume(base_config: BrokerConfig) -> Iterator[Volume]:
    built = asyncio.run(_build(base_config))
    yield built
    asyncio.run(_remove(built.config))


async def cli(config: BrokerConfig, *args: str) -> Any:
    cmd = [sys.executable, "-m", "broker", "--log-level", "WARNING", *args, "--json"]
    done = await asyncio.to_thread(
        subprocess.run, cmd, env=cli_env(config), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


async def delivered(volume: Volume, count: int) -> list[str]:
    """Ids of what reached the recipient's queue (waits for `count` of them)."""
    got: list[str] = []
    async with AgentClient(AgentKey.generate(), volume.recipient_url) as client:
        queue = f"agent.{volume.recipient}"
        channel = client._channel  # the raw queue: the SDK would check the recipient's key
        assert channel is not None
        amqp_queue = await channel.get_queue(queue, ensure=False)
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            message = await amqp_queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.2)
                continue
            got.append(str(message.message_id))
    return got


def _where(position: str) -> range:
    return {"oldest": range(0, 10), "middle": range(TOTAL // 2 - 10, TOTAL // 2 + 10),
            "newest": range(TOTAL - 10, TOTAL + 10)}[position]  # fmt: skip


# -- the command line ---------------------------------------------------------------------


async def test_cli_shows_releases_and_confirms_the_oldest_a_middle_and_the_newest(
    volume: Volume,
) -> None:
    config, released = volume.config, []
    for position, (release, confirm, *_) in volume.positions.items():  # the CLI's two
        shown = await cli(config, "blocked", "show", release)
        assert shown["trace_id"] == release and shown["offset"] in _where(position), position
        assert shown["envelope"]["signature_valid"] is True
        review = await cli(config, "blocked", "release", release, "--reviewer", "rita",
                           "--why", f"false positive at the {position}")  # fmt: skip
        assert (review["action"], review["state"]) == ("release", "done")
        released.append(review["message_id"])
        review = await cli(config, "blocked", "confirm", confirm, "--reviewer", "rita",
                           "--why", "spam", "--penalise")  # fmt: skip
        assert review["penalised"] == shown["sender"]
        again = await cli(config, "blocked", "show", confirm)
        assert again["review"]["action"] == "confirm"
    assert sorted(await delivered(volume, 3)) == sorted(released)


async def test_cli_reads_pages_from_any_offset_and_the_newest_by_default(volume: Volume) -> None:
    config = volume.config
    page = await cli(config, "blocked", "tail", "--offset", "50000", "--limit", "3")
    assert [row["offset"] for row in page] == [50_000, 50_001, 50_002]
    newest = await cli(config, "blocked", "tail", "--limit", "5")
    offsets = [row["offset"] for row in newest]
    assert offsets == sorted(offsets) and offsets[-1] == TOTAL - 1 and len(offsets) == 5
    # (The router decides concurrently: the newest five are in any order.)
    assert {row["trace_id"] for row in newest} == set(volume.positions["newest"])
    replays = await cli(config, "blocked", "tail", "--reason", "replay", "--limit", "20")
    assert len(replays) == 20 and {row["reason"] for row in replays} == {"replay"}
    assert replays[-1]["offset"] > TOTAL - 200  # the newest of them, read backwards
    junk = await cli(config, "blocked", "tail", "--reason", "unparseable", "--limit", "50")
    assert len(junk) == len(JUNK) and all(row["unparseable"] for row in junk)
    assert "not JSON" in " ".join(row["unparseable"] for row in junk)


# -- the console ------------------------------------------------------------------------


async def test_console_releases_and_confirms_the_oldest_a_middle_and_the_newest(
    volume: Volume,
) -> None:
    app = create_app(volume.config, Users().with_user("sam", Role.SECURITY, TOKEN))
    transport = httpx.ASGITransport(app=app)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    released = []
    async with httpx.AsyncClient(
        transport=transport, base_url="http://console", headers=auth, timeout=300
    ) as api:
        newest = (await api.get("/api/blocked", params={"hours": 0, "limit": 3})).json()
        assert newest["records"][0]["trace"] in volume.positions["newest"]
        for position, (_, _, release, confirm, _) in volume.positions.items():
            done = await api.post(f"/api/blocked/{release}/release", json={"why": position})
            assert done.status_code == 200, done.text
            released.append(done.json()["message_id"])
            done = await api.post(f"/api/blocked/{confirm}/confirm", json={"why": "right"})
            assert done.status_code == 200, done.text
            again = await api.post(f"/api/blocked/{confirm}/release", json={"why": "undo?"})
            assert again.status_code == 409
        page = await api.get("/blocked", params={"hours": 0, "reason": "unparseable"})
        assert page.status_code == 200 and page.text.count("unparseable") >= len(JUNK)
    await app.state.console.store.close()  # no lifespan under ASGITransport
    assert sorted(await delivered(volume, 3)) == sorted(released)


# -- reading is a seek, not a scan -------------------------------------------------------


async def test_finding_a_record_seeks_to_it_instead_of_reading_from_the_start(
    volume: Volume,
) -> None:
    store = open_store(volume.config)
    try:
        middle = volume.positions["middle"][-1]  # nobody looked at it yet
        first = ReadStats()
        entry = await find_blocked(volume.config, middle, index=store, stats=first)
        assert entry is not None and entry.offset in _where("middle")
        # Seeking by the time in the trace id reads a second's worth of records, not 50,000.
        assert first.messages < 20_000, first
        again = ReadStats()
        assert await find_blocked(volume.config, middle, index=store, stats=again) == entry
        # Straight to the remembered offset: one look at the newest chunk, one read there.
        assert (again.attaches, again.messages) == (2, 2)
    finally:
        await store.close()
    tail = ReadStats()
    newest = await tail_blocked(volume.config, BlockedFilter(), limit=50, stats=tail)
    assert len(newest) == 50 and tail.messages < 2_000, tail


def test_the_stream_really_holds_the_volume(volume: Volume) -> None:
    entries = asyncio.run(read_blocked(volume.config, offset=TOTAL - 1, limit=5))
    assert [e.offset for e in entries] == [TOTAL - 1]
    assert volume.replays > 900
    assert base64.b64decode(entries[0].record["raw_b64"])  # a real record at the very end
