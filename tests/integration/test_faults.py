"""Faults: a router killed mid-stream, Redis down (mid-stream and at start), RabbitMQ restarted.

Each test checks the reliability promise at the AMQP level, below the SDK's own duplicate
filter: every message id reaches the recipient's queue exactly once and nothing lands on
the blocked stream or the escalation queue because of the fault.

The servers are shared with other test sessions, so outages are kept to a few seconds and
every stopped server is started again in a `finally`. The RabbitMQ restart takes 15-30 s
and disturbs every other session's connections: it is the last test, and
`-k "not rabbitmq_restart"` leaves it out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import AMQPError

from broker.amqp.committer import CommitUnknown, Outbound, TransactionalCommitter
from broker.amqp.failover import NoNodeAvailable, connect_any
from broker.amqp.management import ManagementAPI
from broker.amqp.topology import declare_router_topology
from broker.app import open_store
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.envelope import encode_envelope
from broker.core.evidence import credential_from, sign_evidence, verify_evidence
from broker.core.identity import AgentKey
from broker.devkit.layout import ServerConfig
from broker.devkit.rabbitmq_server import start_rabbitmq, stop_rabbitmq
from broker.devkit.redis_server import start_redis, stop_redis
from broker.ops.reading import read_blocked, read_escalations
from broker.ops.sweeper import run_sweeper
from broker.router import Router
from broker.sdk.client import AgentClient
from broker.store.redis import RedisStore
from tests.faults.proxy import FreezingProxy
from tests.integration.conftest import REPO, Agent, AgentFactory, router_view
from tests.integration.trust import trust_issuer

DAY_MS = 86_400_000


def _progress(message: str) -> None:
    print(f"[faults] {message}")


# -- helpers --------------------------------------------------------------------------------


async def _pair(agents: AgentFactory, store: RedisStore) -> tuple[Agent, Agent]:
    """A sender on probation (verified identity, no history): its data messages are
    delivered. Returns (sender, recipient)."""
    sender, recipient = await agents(), await agents()
    now, issuer = wall_clock_ms(), AgentKey.generate()
    # Possession is recorded as a completed handshake would; the handshake has its own tests.
    await store.record_possession(sender.did, now, now + DAY_MS)
    await trust_issuer(store, issuer.did, "identity")
    document = sign_evidence(
        issuer, "credential", id=f"cred-{os.urandom(6).hex()}", subject=sender.did,
        organisation="Fault Test Org", issued_at=now - 1000, expires_at=now + DAY_MS,
    )  # fmt: skip
    await store.set_credential(credential_from(verify_evidence(document, "credential", now)))
    return sender, recipient


async def _send(sender: Agent, recipient: Agent, count: int, tag: str) -> list[str]:
    """Publish `count` distinct messages (confirmed); return their ids in order."""
    ids: list[str] = []
    for start in range(0, count, 50):
        batch = range(start, min(start + 50, count))
        sent = await asyncio.gather(*(sender.send(recipient, {tag: i}) for i in batch))
        ids.extend(env.id for env in sent)
    return ids


class Stream:
    """Messages published one after another until stopped (confirmed, in order)."""

    def __init__(self, sender: Agent, recipient: Agent) -> None:
        self.ids: list[str] = []
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(sender, recipient))

    async def _run(self, sender: Agent, recipient: Agent) -> None:
        while not self._stop.is_set():
            self.ids.append((await sender.send(recipient, {"n": len(self.ids)})).id)
            await asyncio.sleep(0.002)

    def stop(self) -> None:
        """Publish nothing more after the message in progress."""
        self._stop.set()

    async def finished(self) -> None:
        """Wait for the last publish (and raise its error, if any)."""
        await self._task


@asynccontextmanager
async def _stream(sender: Agent, recipient: Agent) -> AsyncIterator[Stream]:
    stream = Stream(sender, recipient)
    try:
        yield stream
    finally:
        stream.stop()
        await stream.finished()


class Probe:
    """Exact queue counts from passive declares (the management API's are a few s stale)."""

    def __init__(self, connection: AbstractRobustConnection, config: BrokerConfig) -> None:
        self._connection = connection
        self.topology = config.topology
        self._api = ManagementAPI(config.management_url)
        self._vhost = config.vhost

    async def counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue in the test's vhost."""
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return result.message_count or 0, result.consumer_count or 0
        finally:
            await channel.close()

    async def ingress(self) -> tuple[int, int]:
        """(ready messages, consumers) of ingress: trust.ingress and every agent's lane
        together; consumers is what each has, or -1 while they differ."""
        # Which lanes exist, from the management API (Redis may be down): names only,
        # the counts come from passive declares.
        path = f"/api/queues/{quote(self._vhost, safe='')}?columns=name"
        listed = await asyncio.to_thread(self._api.request, "GET", path)
        prefix = self.topology.lane_queue_prefix
        names = [self.topology.ingress_queue]
        names += sorted(q["name"] for q in listed if q["name"].startswith(prefix))
        counts = [await self.counts(name) for name in names]
        consumers = {count for _, count in counts}
        return sum(ready for ready, _ in counts), consumers.pop() if len(consumers) == 1 else -1

    async def delivered(self, agent: Agent) -> int:
        """Messages waiting in the agent's queue."""
        ready, _ = await self.counts(self.topology.agent_queue(agent.did))
        return ready


@pytest.fixture
async def probe(config: BrokerConfig) -> AsyncIterator[Probe]:
    """An admin connection to the test's vhost for exact queue counts."""
    connection = await aio_pika.connect_robust(config.amqp_vhost_url)
    try:
        yield Probe(connection, config)
    finally:
        await connection.close()


async def _declare_topology(config: BrokerConfig) -> None:
    """Declare what a router would, so messages can be published before any router runs."""
    connection = await aio_pika.connect(config.amqp_vhost_url)
    async with connection:
        await declare_router_topology(await connection.channel(), config.topology)


async def _eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll `check` until it is true; return the seconds it took, fail after `timeout`."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def _drain_ids(agent: Agent, idle: float = 1.5) -> Counter[str]:
    """Consume the agent's queue with its own login until idle; count message ids.

    Raw AMQP on purpose: AgentClient drops repeated ids, which would hide duplicates."""
    ids: Counter[str] = Counter()
    connection = await aio_pika.connect(agent.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        queue = await channel.get_queue(f"agent.{agent.did}", ensure=False)
        async with queue.iterator(timeout=idle) as stream:
            try:
                async for message in stream:
                    assert message.message_id is not None
                    ids[message.message_id] += 1
                    await message.ack()
            except TimeoutError:
                pass
    return ids


def _exactly_once(received: Counter[str], sent: list[str], context: str = "") -> None:
    twice = {i: n for i, n in received.items() if n > 1}
    missing = set(sent) - set(received)
    stray = set(received) - set(sent)
    assert (len(missing), len(twice), len(stray)) == (0, 0, 0), (
        f"{len(sent)} sent: {len(missing)} missing, {len(twice)} delivered more than once "
        f"({sum(twice.values()) - len(twice)} extra copies), {len(stray)} unknown ids{context}"
    )


async def _finished(store: RedisStore, ids: list[str]) -> int:
    """How many of `ids` the store records as finished (outcome confirmed and written)."""
    states = [await store.outcome(i) for i in ids]
    return sum(1 for state in states if state is not None and state.split("|")[1] == "done")


async def _nothing_set_aside(config: BrokerConfig) -> None:
    blocked = await read_blocked(config, limit=1000, idle_timeout=0.5)
    escalated = await read_escalations(config, limit=1000)
    reasons = Counter(entry.record["reason"] for entry in blocked)
    assert (dict(reasons), len(escalated)) == ({}, 0)


@asynccontextmanager
async def _redis_down(server_cfg: ServerConfig) -> AsyncIterator[float]:
    """Stop the shared Redis (cleanly, so the AOF is flushed) and always start it again."""
    await asyncio.to_thread(stop_redis, server_cfg, _progress)
    started = time.monotonic()
    try:
        yield started
    finally:
        await asyncio.to_thread(start_redis, server_cfg, _progress)
        _progress(f"redis was down for {time.monotonic() - started:.1f}s")


# -- router subprocesses ---------------------------------------------------------------


class RouterProcesses:
    """`python -m broker router` processes on the test's vhost and key prefix."""

    def __init__(self, config: BrokerConfig, log_dir: Path, logins: dict[str, str]) -> None:
        self._env = {
            # The routers of one deployment share a broker key; this test is one deployment.
            "TRUST_BROKER_KEY": str(log_dir / "broker.key"),
            **os.environ,
            "TRUST_AMQP_URL": config.amqp_url,
            "TRUST_ROUTER_AMQP_URL": logins["router"],
            "TRUST_REPLY_AMQP_URL": logins["reply"],
            "TRUST_REDIS_URL": config.redis_url,
            "TRUST_MANAGEMENT_URL": config.management_url,
            "TRUST_VHOST": config.vhost,
            "TRUST_KEY_PREFIX": config.key_prefix,
        }
        self._log_dir = log_dir
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        """Launch one router; its output goes to a log file under tmp_path."""
        log = self._log_dir / f"router-{len(self._running)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "broker", "--log-level", "WARNING", "router"],
                cwd=REPO,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._running.append(process)
        return process

    def logs(self) -> str:
        """Everything the routers printed, for failure messages."""
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in sorted(self._log_dir.glob("router-*.log"))
        )

    def stop_all(self) -> None:
        """SIGTERM (clean stop) each router still running; SIGKILL one that hangs."""
        for process in self._running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def routers(
    config: BrokerConfig, tmp_path: Path, service_logins: dict[str, str]
) -> Iterator[RouterProcesses]:
    """Start routers as separate processes (with the router's own logins); stopped
    before the vhost is deleted."""
    processes = RouterProcesses(config, tmp_path, service_logins)
    try:
        yield processes
    finally:
        processes.stop_all()


async def _consuming(probe: Probe, routers: RouterProcesses, count: int = 1) -> None:
    async def ready() -> bool:
        _, consumers = await probe.ingress()
        return consumers >= count

    await _eventually(ready, 30, f"{count} router(s) consuming ingress\n{routers.logs()}")


# -- tests ----------------------------------------------------------------------------------


async def test_kill_9_mid_stream_loses_nothing_and_delivers_nothing_twice(
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    probe: Probe,
    routers: RouterProcesses,
) -> None:
    """SIGKILL a router with messages in flight; a second router finishes the stream:
    every id arrives once, and the redeliveries are not blocked as replays."""
    # Several times the default prefetch (512), so the stream needs many commits and the
    # kill lands with some committed, some in flight and some not yet taken.
    total = 2_000
    sender, recipient = await _pair(agents, store)
    await _declare_topology(config)
    sent = await _send(sender, recipient, total, "kill")
    assert (await probe.ingress())[0] == total

    first = routers.start()

    async def some_delivered() -> bool:
        return await probe.delivered(recipient) >= total // 8

    await _eventually(some_delivered, 30, f"first deliveries\n{routers.logs()}", interval=0.005)
    first.kill()
    assert first.wait(timeout=10) == -signal.SIGKILL
    at_kill, finished = await probe.delivered(recipient), await _finished(store, sent)
    context = (
        f"; at the SIGKILL {at_kill} were in the recipient's queue but only {finished} were "
        "recorded as finished in Redis"
    )
    _progress(f"SIGKILL with {at_kill} of {total} delivered, {finished} recorded")
    assert at_kill < total, "the router finished before it was killed: nothing was in flight"

    routers.start()
    await _consuming(probe, routers)

    async def all_through() -> bool:
        ready, _ = await probe.ingress()
        return ready == 0 and await probe.delivered(recipient) >= total

    await _eventually(all_through, 30, f"the second router finishing\n{routers.logs()}")
    await _nothing_set_aside(config)
    _exactly_once(await _drain_ids(recipient), sent, context)


async def test_redis_outage_mid_stream_pauses_then_resumes_without_loss(
    config: BrokerConfig,
    server_cfg: ServerConfig,
    store: RedisStore,
    agents: AgentFactory,
    probe: Probe,
    router: Router,
) -> None:
    """Redis stops mid-stream: the router stops consuming, delivers nothing unscored and
    blocks nothing; once Redis is back it resumes by itself and delivers every id once."""
    sender, recipient = await _pair(agents, store)
    async with _stream(sender, recipient) as sent:

        async def flowing() -> bool:
            return await probe.delivered(recipient) >= 30

        await _eventually(flowing, 15, "the stream flowing")
        async with _redis_down(server_cfg):
            await asyncio.sleep(1.0)  # the stream goes on during the outage
            sent.stop()
            await sent.finished()
            total = len(sent.ids)

            async def paused_and_settled() -> bool:
                # Paused: no consumer on ingress. Settled: every message is either in the
                # recipient's queue or back on ingress (nothing held, nothing lost).
                ready, consumers = await probe.ingress()
                return consumers == 0 and ready + await probe.delivered(recipient) == total

            await _eventually(paused_and_settled, 10, "the router pausing for the store")
            delivered = await probe.delivered(recipient)
            _progress(f"paused with {delivered} of {total} delivered")
            await asyncio.sleep(1.0)  # two store retry periods: still nothing may move
            assert (await probe.delivered(recipient), await probe.ingress()) == (
                delivered,
                (total - delivered, 0),
            )
            assert delivered < total, "nothing was published during the outage"
            await _nothing_set_aside(config)

    async def resumed() -> bool:
        ready, consumers = await probe.ingress()
        return consumers == 1 and ready == 0 and await probe.delivered(recipient) >= total

    took = await _eventually(resumed, 20, "the router resuming by itself")
    _progress(f"resumed and drained {took:.1f}s after Redis answered")
    _exactly_once(await _drain_ids(recipient), sent.ids)
    await _nothing_set_aside(config)


async def test_router_started_while_redis_is_down_waits_then_starts(
    config: BrokerConfig,
    server_cfg: ServerConfig,
    store: RedisStore,
    agents: AgentFactory,
    probe: Probe,
    routers: RouterProcesses,
) -> None:
    """A router launched with Redis down takes nothing (fail closed) and starts by itself
    once Redis answers."""
    sender, recipient = await _pair(agents, store)
    await _declare_topology(config)
    async with _redis_down(server_cfg):
        process = routers.start()
        sent = await _send(sender, recipient, 50, "waiting")
        await asyncio.sleep(1.5)  # three store retry periods
        assert process.poll() is None, f"the router gave up\n{routers.logs()}"
        assert (await probe.ingress(), await probe.delivered(recipient)) == ((len(sent), 0), 0)

    await _consuming(probe, routers)

    async def delivered() -> bool:
        return await probe.delivered(recipient) >= len(sent)

    await _eventually(delivered, 15, f"deliveries after Redis returned\n{routers.logs()}")
    _exactly_once(await _drain_ids(recipient), sent)
    await _nothing_set_aside(config)


# -- the findings of issue 13 -------------------------------------------------------------


def _through(config: BrokerConfig, port: int) -> BrokerConfig:
    """`config` with the router's AMQP URL pointed at 127.0.0.1:port (a proxy)."""
    parts = urlsplit(config.amqp_url)
    netloc = parts.netloc.rpartition("@")[0] + f"@127.0.0.1:{port}"
    return replace(config, amqp_url=urlunsplit(parts._replace(netloc=netloc)))


@pytest.mark.timeout(300)
async def test_a_commit_on_a_frozen_connection_gives_its_messages_back(
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    probe: Probe,
    broker_key: AgentKey,
    service_logins: dict[str, str],
) -> None:
    """Finding 1: the router's connection freezes mid-stream (a partition: nothing answers,
    nothing closes). Its commits must not wait forever: the messages it held come back
    and are routed once, through a new connection, while the old one is still frozen."""
    sender, recipient = await _pair(agents, store)
    proxy = await FreezingProxy(urlsplit(config.amqp_url).port or 5672).start()
    async with _router_behind(proxy, config, service_logins, broker_key):
        async with _stream(sender, recipient) as sent:

            async def flowing() -> bool:
                return await probe.delivered(recipient) >= 30

            await _eventually(flowing, 15, "the stream flowing")
            proxy.freeze()
            frozen_at = time.monotonic()
            await asyncio.sleep(2.0)
        total = len(sent.ids)

        async def all_through() -> bool:
            return await probe.delivered(recipient) >= total

        await _eventually(all_through, 90, f"all {total} delivered with the old link frozen")
        _progress(f"all delivered {time.monotonic() - frozen_at:.1f}s after the freeze")
        _exactly_once(await _drain_ids(recipient), sent.ids)
        await _nothing_set_aside(config)


@asynccontextmanager
async def _router_behind(
    proxy: FreezingProxy, config: BrokerConfig, service_logins: dict[str, str],
    broker_key: AgentKey, **settings: Any,
) -> AsyncIterator[Router]:  # fmt: skip
    """A router (with its own store) whose AMQP goes through `proxy`; stopped, and the
    proxy closed, afterwards."""
    own_store = open_store(config)
    view = replace(router_view(config, service_logins), **settings)
    router = Router(
        _through(view, proxy.port), own_store, broker_key=broker_key, sweeper=run_sweeper
    )
    await router.start()
    try:
        yield router
    finally:
        await router.stop()
        await own_store.close()
        await proxy.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("ending", ["deadline", "reset"])
async def test_a_commit_without_commit_ok_lists_its_outcomes_in_doubt_until_they_come_back(
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    probe: Probe,
    broker_key: AgentKey,
    service_logins: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
) -> None:
    """A commit whose tx.commit went out and never got commit-ok may have taken effect in
    any part (RabbitMQ does not make a transaction atomic across queues), so the router
    lists each of its outcomes as in doubt, ids and routing only. Here the link froze just
    before the commit's frames, so none of it reached RabbitMQ: every one of those messages
    comes back, is routed once, and its entry then says 'came back'. The commit ends by
    its deadline, or (`reset`, as when the node running the channel dies) by the
    connection being reset while commit-ok is awaited: aiormq then cancels the tasks of
    the channel's consumers, which must not take the listing with them."""
    sender, recipient = await _pair(agents, store)
    proxy = await FreezingProxy(urlsplit(config.amqp_url).port or 5672).start()
    frozen_batch: list[str] = []
    commit_now = TransactionalCommitter._commit_now
    publishing_commits = 0

    async def freeze_the_third(self: TransactionalCommitter, batch: list[Any], attempt: Any) -> Any:
        nonlocal publishing_commits
        published = [item.publish.message.message_id for item in batch if item.publish]
        if published:
            publishing_commits += 1
            if publishing_commits == 3:
                frozen_batch.extend(published)
                proxy.freeze()  # this commit's frames, tx.commit included, go nowhere
        return await commit_now(self, batch, attempt)

    monkeypatch.setattr(TransactionalCommitter, "_commit_now", freeze_the_third)
    behind = _router_behind(proxy, config, service_logins, broker_key, commit_timeout_ms=3_000)
    async with behind as router:
        async with _stream(sender, recipient) as sent:

            async def frozen() -> bool:
                return bool(frozen_batch)

            await _eventually(frozen, 15, "a third commit with deliveries")
            await asyncio.sleep(1.0)
            if ending == "reset":
                proxy.cut()  # well before the 3 s deadline
        total = len(sent.ids)

        async def all_through() -> bool:
            return await probe.delivered(recipient) >= total

        await _eventually(all_through, 120, f"all {total} delivered after the frozen commit")
        _exactly_once(await _drain_ids(recipient), sent.ids)
        listed = await store.in_doubt(limit=10_000)
        assert sorted(entry["id"] for entry in listed) == sorted(frozen_batch)
        assert {entry["status"] for entry in listed} == {"came back"}
        assert {(e["action"], e["routing_key"], e["sender"]) for e in listed} == {
            ("deliver", recipient.did, sender.did)
        }
        assert router.metrics.outcomes_in_doubt._value.get() == len(frozen_batch)


async def test_a_commit_for_a_message_of_a_closed_channel_never_reports_success(
    config: BrokerConfig,
) -> None:
    """Finding 2: a message delivered on a channel that has since been replaced was
    requeued by the broker; committing its outcome must fail (so no outcome is recorded
    for it), never report success while neither the publish nor the ack happened."""
    await _declare_topology(config)
    connection = await aio_pika.connect_robust(config.amqp_vhost_url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=10)
        queue = await channel.get_queue(config.topology.escalations_queue, ensure=False)
        await channel.default_exchange.publish(
            aio_pika.Message(b"held", message_id="m1"), routing_key=queue.name
        )
        message = await _get_one(queue)
        committer = TransactionalCommitter(channel)
        # The channel dies under the message (as in a reconnection); the robust channel
        # reopens a new one, so the committer's next commit runs there.
        await (await channel.get_underlay_channel()).close()
        await _eventually(_reopened(channel), 15, "the channel reopened")
        out = Outbound("", config.topology.blocked_stream, aio_pika.Message(b"outcome"))
        try:
            await committer.commit(message, out)
            committed = True
        except CommitUnknown:
            pytest.fail("nothing was written into the commit, so its outcome is not in doubt")
        except ConnectionError:
            committed = False
        assert not committed, "a commit that published and acked nothing reported success"
        again = await _get_one(queue)
        assert (again.body, again.redelivered) == (b"held", True)
    finally:
        await connection.close()


async def _get_one(queue: Any) -> Any:
    for _ in range(100):
        message = await queue.get(no_ack=False, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.05)
    pytest.fail("no message arrived")


def _reopened(channel: Any) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            underlay = await asyncio.wait_for(channel.get_underlay_channel(), 1)
        except (TimeoutError, AMQPError, RuntimeError):
            return False
        return not underlay.is_closed

    return check


@pytest.mark.timeout(300)
async def test_a_paused_router_is_noticed_and_its_messages_reach_a_healthy_one(
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    probe: Probe,
    routers: RouterProcesses,
) -> None:
    """Finding 3: one of two routers is SIGSTOPped with messages in its prefetch. They
    must reach the other router while it is still stopped, and the time they waited must
    never turn into clock_skew blocks (the policy allows 60 s of skew here, the pause
    lasts 75 s)."""
    policy = await store.load_policy()
    gates = policy.gates.model_copy(update={"max_clock_skew_ms": 60_000})
    await store.save_policy(policy.model_copy(update={"gates": gates}), why="short skew")
    sender, recipient = await _pair(agents, store)
    await _declare_topology(config)
    paused, _ = routers.start(), routers.start()
    await _consuming(probe, routers, 2)
    async with _stream(sender, recipient) as sent:

        async def flowing() -> bool:
            return await probe.delivered(recipient) >= 30

        await _eventually(flowing, 15, "the stream flowing")
        paused.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            await asyncio.sleep(10.0)  # the stopped router keeps receiving its share
            sent.stop()
            await sent.finished()
            total = len(sent.ids)

            async def all_through() -> bool:
                return await probe.delivered(recipient) >= total

            await _eventually(all_through, 55, f"all {total} delivered while one router is stopped")
            _progress(f"all delivered {time.monotonic() - stopped_at:.1f}s after SIGSTOP")
            await asyncio.sleep(max(0.0, 75 - (time.monotonic() - stopped_at)))
        finally:
            paused.send_signal(signal.SIGCONT)
    await _consuming(probe, routers, 2)
    await asyncio.sleep(2.0)  # the resumed router must not commit anything stale either
    _exactly_once(await _drain_ids(recipient), sent.ids)
    await _nothing_set_aside(config)


async def test_publishing_the_same_bytes_again_is_idempotent(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory, probe: Probe
) -> None:
    """Finding 4: a producer that retries with the very same envelope (its confirm was
    lost) gets one outcome, not a `replay` block; before and after the first copy is
    routed alike."""
    sender, recipient = await _pair(agents, store)
    envelopes = [sender.client.envelope(recipient.did, {"retry": i}) for i in range(200)]
    raws = [encode_envelope(env) for env in envelopes]
    await asyncio.gather(*(sender.client.publish_raw(raw) for raw in raws))  # in flight
    await asyncio.gather(*(sender.client.publish_raw(raw) for raw in raws))
    await asyncio.sleep(1.0)
    await asyncio.gather(*(sender.client.publish_raw(raw) for raw in raws))  # after
    ids = [env.id for env in envelopes]

    async def settled() -> bool:
        ready, _ = await probe.ingress()
        return ready == 0

    await _eventually(settled, 30, "ingress drained")
    _exactly_once(await _drain_ids(recipient), ids)
    await _nothing_set_aside(config)


async def test_rabbitmq_restart_router_reconnects_by_itself(
    config: BrokerConfig,
    server_cfg: ServerConfig,
    store: RedisStore,
    agents: AgentFactory,
    probe: Probe,
    router: Router,
) -> None:
    """Restart RabbitMQ under a running router: it reconnects and consumes again without
    help, what was delivered before survives, and new messages are delivered once."""
    sender, recipient = await _pair(agents, store)
    before = await _send(sender, recipient, 50, "before")

    def delivered(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await probe.delivered(recipient) >= count

        return check

    await _eventually(delivered(len(before)), 15, "deliveries before the restart")
    try:
        await asyncio.to_thread(stop_rabbitmq, server_cfg, _progress)
    finally:
        await asyncio.to_thread(start_rabbitmq, server_cfg, _progress)

    async def router_consuming() -> bool:
        try:
            _, consumers = await probe.ingress()
        except (AMQPError, ConnectionError, RuntimeError):
            return False  # the probe's own connection is still reconnecting
        return consumers == 1

    took = await _eventually(router_consuming, 45, "the router consuming again", interval=0.25)
    _progress(f"router consuming again {took:.1f}s after RabbitMQ answered")
    async with AgentClient(sender.key, sender.amqp_url) as client:
        after = [(await client.send(recipient.did, {"after": i})).id for i in range(50)]
    await _eventually(delivered(len(before) + len(after)), 15, "deliveries after the restart")
    _exactly_once(await _drain_ids(recipient), before + after)
    await _nothing_set_aside(config)


async def test_connecting_to_no_reachable_node_names_every_node_tried() -> None:
    """Every node refuses (nothing listens there): one clear error naming each URL tried,
    never a password."""
    with pytest.raises(NoNodeAvailable) as raised:
        await connect_any(
            ["amqp://u:secret@127.0.0.1:1/", "amqp://u:secret@127.0.0.1:2/"], timeout=2
        )
    text = str(raised.value)
    assert "127.0.0.1:1" in text and "127.0.0.1:2" in text and "secret" not in text
