"""The fault suite: producers, two routers and a seeded nemesis on a 3-node RabbitMQ
cluster with Redis, a replica and Sentinels; then heal, drain and check every id.

    python -m tests.faults --nemesis kill-rabbit --seeds 1,2,3 --messages 5000
    python -m tests.faults --short          # what CI runs: one seed, every nemesis, small

The cluster is the project's own (broker.devkit.cluster: Debian's rabbitmq-server, redis-server
and redis-sentinel), in its own run directory (TRUST_RUN_DIR/faults) and on ports 3 above
the suite's base ports, so the single-node servers the other tests use are never touched.
Each run gets a fresh vhost and Redis key prefix. Producers log every id as confirmed
(RabbitMQ confirmed it), unknown (no confirm before the SDK's deadline: it may or may
not have arrived) or failed (never published); the checker (tests/faults/checker.py)
then counts lost, duplicated, unexpected and fault-blocked ids.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from broker.amqp.failover import connect_any
from broker.amqp.management import ManagementAPI
from broker.app import open_store
from broker.cli.settings import local_urls, server_config
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.evidence import credential_from, sign_evidence, verify_evidence
from broker.core.identity import AgentKey
from broker.core.state import IssuerRole, RecipientProfile
from broker.devkit import credentials, servers
from broker.devkit.install import ensure_installed
from broker.devkit.layout import ServerConfig
from broker.errors import BrokerUnavailable
from broker.ops.provision import agent_amqp_url, provision_agent, setup_vhost
from broker.ops.reading import read_blocked, read_escalations
from broker.sdk.client import AgentClient
from broker.store.redis import RedisStore
from tests.faults.checker import CONFIRMED, FAILED, UNKNOWN, Outcomes, Verdict, check
from tests.faults.nemesis import NEMESES, Faults, Routers

REPO = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000
PORT_OFFSET = 3  # the fault cluster's ports: the suite's base ports + 3 ..


def _log(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", flush=True)


def fault_cluster(env: dict[str, str] | None = None) -> ServerConfig:
    """The suite's 3-node cluster with Sentinel, beside the base servers in `env`."""
    base = server_config(env or dict(os.environ))
    name = base.node_name.partition("@")[0]
    return replace(
        base,
        run_dir=base.run_dir / "faults",
        amqp_port=base.amqp_port + PORT_OFFSET,
        management_port=base.management_port + PORT_OFFSET,
        dist_port=base.dist_port + PORT_OFFSET,
        redis_port=base.redis_port + PORT_OFFSET,
        sentinel_port=base.redis_port + 20000 + PORT_OFFSET,
        node_name=f"{name}-faults",
        nodes=3,
        sentinel=True,
    )


def start_fault_cluster(cfg: ServerConfig) -> None:
    """Install what is missing and start the cluster, replica and Sentinels."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.run_dir.chmod(0o755)
    ensure_installed(_log)
    servers.start(cfg, _log, timeout=300)


@dataclass
class World:
    """One run's vhost, prefix, logins and agents on the fault cluster."""

    config: BrokerConfig
    router_env: dict[str, str]
    senders: list[AgentClient]
    recipients: list[tuple[AgentKey, str]]


async def make_world(cfg: ServerConfig, producers: int, log_dir: Path) -> World:
    """A fresh vhost (topology and service accounts), producers on probation (their data
    messages are delivered), and their recipients."""
    urls = local_urls(cfg)
    name = f"faults-{uuid.uuid4().hex[:10]}"
    config = BrokerConfig(
        amqp_url=urls["admin_amqp"], redis_url=urls["redis"], management_url=urls["management"],
        vhost=name, key_prefix=f"{name}:",
    )  # fmt: skip
    creds = credentials.load(cfg.run_dir.resolve())
    assert creds is not None
    await setup_vhost(config, creds.accounts())
    store = open_store(config)
    try:
        senders, recipients = await _agents(config, store, producers)
    finally:
        await store.close()
    env = {
        **os.environ,
        "TRUST_AMQP_URL": config.amqp_url,
        "TRUST_ROUTER_AMQP_URL": urls["router_amqp"],
        "TRUST_REPLY_AMQP_URL": urls["reply_amqp"],
        "TRUST_REDIS_URL": config.redis_url,
        "TRUST_MANAGEMENT_URL": config.management_url,
        "TRUST_VHOST": config.vhost,
        "TRUST_KEY_PREFIX": config.key_prefix,
        "TRUST_BROKER_KEY": str(log_dir / "broker.key"),
        "TRUST_METRICS_PORT": "0",
        "TRUST_RUN_DIR": str(cfg.run_dir),
    }
    return World(config, env, senders, recipients)


async def _agents(
    config: BrokerConfig, store: RedisStore, producers: int
) -> tuple[list[AgentClient], list[tuple[AgentKey, str]]]:
    issuer, now = AgentKey.generate(), wall_clock_ms()
    await store.add_issuer(issuer.did, {IssuerRole.IDENTITY})
    senders: list[AgentClient] = []
    recipients: list[tuple[AgentKey, str]] = []
    for _ in range(producers):
        key = AgentKey.generate()
        creds = await provision_agent(config, store, RecipientProfile(did=key.did))
        await store.record_possession(key.did, now, now + DAY_MS)
        document = sign_evidence(
            issuer, "credential", id=f"cred-{uuid.uuid4().hex[:8]}", subject=key.did,
            organisation="Fault Suite", issued_at=now - 1000, expires_at=now + DAY_MS,
        )  # fmt: skip
        await store.set_credential(credential_from(verify_evidence(document, "credential", now)))
        url = agent_amqp_url(config, creds)
        senders.append(await AgentClient(key, url, publish_timeout=90).connect())
        recipient = AgentKey.generate()
        made = await provision_agent(config, store, RecipientProfile(did=recipient.did))
        recipients.append((recipient, agent_amqp_url(config, made)))
    return senders, recipients


def router_launcher(world: World, log_dir: Path) -> Routers:
    """Routers as `python -m broker router` processes, each logging to its own file."""
    count = [0]

    def launch() -> subprocess.Popen[bytes]:
        count[0] += 1
        log = log_dir / f"router-{count[0]}.log"
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "broker", "--log-level", "WARNING", "router"],
                cwd=REPO, env=world.router_env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    return Routers(launch)


async def produce(
    world: World, total: int, seconds: float, attempts: dict[str, str], rng: random.Random
) -> None:
    """`total` messages from the producers, spread over about `seconds` (bursts of 50),
    each id logged before its publish and settled after it."""
    per = total // len(world.senders)

    async def one(sender: AgentClient, recipient: str, index: int) -> None:
        envelope = sender.envelope(recipient, {"n": index})
        attempts[envelope.id] = UNKNOWN
        try:
            await sender.send_envelope(envelope)
        except BrokerUnavailable:
            return  # no confirm: it may or may not have arrived
        except Exception:
            attempts[envelope.id] = FAILED
            return
        attempts[envelope.id] = CONFIRMED

    async def producer(number: int, sender: AgentClient) -> None:
        recipient = world.recipients[number][0].did
        pause = seconds / max(per / 50, 1)
        for start in range(0, per, 50):
            burst = range(start, min(start + 50, per))
            await asyncio.gather(*(one(sender, recipient, i) for i in burst))
            await asyncio.sleep(pause * rng.uniform(0.5, 1.5))

    progress = asyncio.create_task(_report(attempts, total))
    try:
        await asyncio.gather(*(producer(i, s) for i, s in enumerate(world.senders)))
    finally:
        progress.cancel()


async def _report(attempts: dict[str, str], total: int) -> None:
    while True:
        await asyncio.sleep(10)
        counts = Counter(attempts.values())
        _log(f"producers: {len(attempts)}/{total} attempted, {counts[CONFIRMED]} confirmed, "
             f"{counts[UNKNOWN]} unsettled or unknown")  # fmt: skip


async def settle(world: World, timeout: float) -> None:
    """Wait until ingress and every sender's lane are empty and nothing is unacked
    there, for 5 s in a row."""
    topology = world.config.topology
    queues = [topology.ingress_queue] + [topology.lane_queue(s.did) for s in world.senders]
    quiet_since, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await _messages_on(world, queues):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 5:
            return
        await asyncio.sleep(1.0)
    _log("ingress did not settle in time: checking anyway")


async def drain(world: World) -> Outcomes:
    """Every recipient queue (raw AMQP, so duplicates show), the blocked stream and the
    escalation queue."""
    delivered: Counter[str] = Counter()
    for attempt in range(1, 6):
        found: Counter[str] = Counter()
        for key, url in world.recipients:
            found.update(await _drain_queue(key.did, url, world))
        delivered.update(found)
        if attempt > 1 and found:
            # A queue that paused its deliveries past the drain's idle timeout (a leader
            # moving back to a node that returned): without this pass, delivered messages
            # would count as lost.
            _log(f"drain: pass {attempt} found {sum(found.values())} more")
        await asyncio.sleep(5.0)  # the management API's statistics lag by up to 5 s
        if not await _messages_on(world, _recipient_queues(world)):
            break
    blocked = [
        (str(e.record.get("message_id")), str(e.record.get("reason")))
        for e in await read_blocked(world.config, limit=1_000_000, idle_timeout=3.0)
    ]
    escalated = [
        str(r.get("message_id")) for r in await read_escalations(world.config, limit=100_000)
    ]
    store = open_store(world.config)
    try:
        listed = frozenset(e["id"] for e in await store.in_doubt(limit=100_000))
    finally:
        await store.close()
    return Outcomes(delivered, blocked, escalated, listed)


def _recipient_queues(world: World) -> list[str]:
    return [world.config.topology.agent_queue(key.did) for key, _ in world.recipients]


async def _queue_info(world: World, name: str) -> dict[str, Any]:
    """The management API's view of one queue of the run's vhost."""
    api = ManagementAPI(world.config.management_url)
    path = f"/api/queues/{world.config.vhost}/{quote(name, safe='')}"
    info: dict[str, Any] = await asyncio.to_thread(api.request, "GET", path)
    return info


async def _messages_on(world: World, queues: list[str]) -> int:
    """Messages ready or unacked on `queues`, says the management API (a queue it cannot
    read counts as one)."""
    left = 0
    for name in queues:
        try:
            info = await _queue_info(world, name)
            left += (info.get("messages") or 0) + (info.get("messages_unacknowledged") or 0)
        except Exception:
            left += 1
    return left


async def _drain_queue(did: str, url: str, world: World) -> Counter[str]:
    ids: Counter[str] = Counter()
    connection = await connect_any(url.split(","), timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.get_queue(world.config.topology.agent_queue(did), ensure=False)
        async with queue.iterator(timeout=3.0) as stream:
            try:
                async for message in stream:
                    ids[message.message_id or "?"] += 1
                    await message.ack()
            except TimeoutError:
                pass
    return ids


async def run_once(
    cfg: ServerConfig, nemesis: str, seed: int, messages: int, seconds: float
) -> Verdict:
    """One seeded run: produce under the nemesis, heal, settle, drain, check."""
    rng = random.Random(f"{nemesis}:{seed}")
    log_dir = cfg.run_dir / "logs" / f"{nemesis}-{seed}-{int(time.time())}"
    log_dir.mkdir(parents=True, exist_ok=True)
    world = await make_world(cfg, 4, log_dir)
    routers = router_launcher(world, log_dir)
    routers.start(), routers.start()
    faults = Faults(cfg, routers, rng)
    attempts: dict[str, str] = {}
    names = list(NEMESES) if nemesis == "mix" else [nemesis]
    try:
        await asyncio.sleep(3.0)  # routers connecting
        producing = asyncio.create_task(produce(world, messages, seconds, attempts, rng))
        await _inject(faults, names, seconds, rng, producing)
        await producing
        await asyncio.to_thread(faults.heal)
        await settle(world, 300)
        verdict = check(attempts, await drain(world))
        forensics = await _forensics(world, verdict.lost[:100]) if verdict.lost else {}
    finally:
        for client in world.senders:
            await client.close()
        for process in routers.running:
            if process.poll() is None:
                process.terminate()
        for process in routers.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        await _remove_vhost(world.config)
    republished = set().union(*(client.republished for client in world.senders))
    details = {**verdict.row(), "lost_ids": verdict.lost[:100],
               "lost_unlisted_ids": verdict.lost_unlisted[:100],
               "duplicated_ids": dict(list(verdict.duplicated.items())[:100]),
               "republished": len(republished),
               "duplicated_and_republished": sorted(set(verdict.duplicated) & republished),
               "lost_and_republished": sorted(set(verdict.lost) & republished),
               "forensics": forensics,
               }  # fmt: skip
    (log_dir / "verdict.json").write_text(json.dumps(details, indent=2))
    return verdict


async def _forensics(world: World, lost: list[str]) -> dict[str, Any]:
    """What Redis and RabbitMQ still say about lost ids, read before the vhost goes: each
    id's claim, its decision's trace, its in-doubt entry; and what the drained queues
    still hold (a drain that stopped early would count delivered messages as lost)."""
    store = open_store(world.config)
    try:
        doubts = {e["id"]: dict(e) for e in await store.in_doubt(limit=100_000)}
        ids: dict[str, Any] = {}
        for message_id in lost:
            trace_id = await store.trace_id_of(message_id)
            ids[message_id] = {
                "claim": await store.outcome(message_id),
                "trace": await store.trace(trace_id) if trace_id else None,
                "in_doubt": doubts.get(message_id),
            }
    finally:
        await store.close()
    left: dict[str, Any] = {}
    for name in _recipient_queues(world):
        with contextlib.suppress(Exception):
            info = await _queue_info(world, name)
            left[name] = {k: info.get(k) for k in ("messages", "messages_unacknowledged",
                                                    "leader", "members", "online")}  # fmt: skip
    return {"ids": ids, "recipient_queues_after_drain": left}


async def _inject(
    faults: Faults, names: list[str], seconds: float, rng: random.Random, producing: Any
) -> None:
    """One nemesis: again and again while the producers run (at least once). Several
    (mix): each once, in a seeded order."""
    gap = max(2.0, seconds / 6)
    if len(names) > 1:
        order = list(names)
        rng.shuffle(order)
        for name in order:
            await asyncio.sleep(rng.uniform(1.0, gap))
            await NEMESES[name](faults)
        return
    while True:
        await asyncio.sleep(rng.uniform(1.0, gap))
        await NEMESES[names[0]](faults)
        if producing.done():
            return


async def _remove_vhost(config: BrokerConfig) -> None:
    api = ManagementAPI(config.management_url)
    with contextlib.suppress(Exception):
        await asyncio.to_thread(api.delete_vhost, config.vhost)
    store = open_store(config)
    try:
        await store.purge()
    except Exception:
        pass
    finally:
        await store.close()


def table(rows: list[tuple[str, int, Verdict]]) -> str:
    """A Markdown table of the runs, for docs/RELIABILITY.md."""
    head = ("| nemesis | seed | attempts | confirmed | unknown | delivered | blocked | "
            "escalated | lost | duplicated | unexpected | fault-blocked | in doubt | "
            "lost unlisted |")  # fmt: skip
    lines = [head, "|" + "---|" * 14]
    for name, seed, v in rows:
        r = v.row()
        lines.append(
            f"| {name} | {seed} | {r['attempts']:,} | {r['confirmed']:,} | {r['unknown']} | "
            f"{r['delivered']:,} | {r['blocked']} | {r['escalated']} | {r['lost']} | "
            f"{r['duplicated']} | {r['unexpected']} | {r['fault_blocked']} | "
            f"{r['in_doubt']} | {r['lost_unlisted']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the chosen nemeses with the chosen seeds; exit 1 unless all ok."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults",
        description="Jepsen-style fault suite on a local 3-node RabbitMQ cluster with "
        "Redis + replica + Sentinels. Example: python -m tests.faults --nemesis "
        "kill-rabbit --seeds 1,2,3 --messages 5000",
    )
    parser.add_argument("--nemesis", default="all", help=f"{', '.join(NEMESES)}, mix or all")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    parser.add_argument("--messages", type=int, default=5000, help="per run (default 5000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="publishing time per run")
    parser.add_argument(
        "--short", action="store_true", help="CI: one run, every nemesis in turn (mix), seed 1"
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.short:
        args.nemesis, args.seeds, args.messages, args.seconds = "mix", "1", 1000, 30.0
    names = list(NEMESES) if args.nemesis == "all" else args.nemesis.split(",")
    unknown = [name for name in names if name not in NEMESES and name != "mix"]
    if unknown:
        parser.error(f"unknown nemesis {', '.join(unknown)}: choose from {', '.join(NEMESES)}, mix")
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = fault_cluster()
    start_fault_cluster(cfg)
    rows: list[tuple[str, int, Verdict]] = []
    for name in names:
        for seed in seeds:
            _log(f"run: {name}, seed {seed}, {args.messages} messages")
            verdict = asyncio.run(run_once(cfg, name, seed, args.messages, args.seconds))
            rows.append((name, seed, verdict))
            _log(f"{name} seed {seed}: {json.dumps(verdict.row())}")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([{"nemesis": n, "seed": s, **v.row()}
                                               for n, s, v in rows], indent=2))  # fmt: skip
    return 0 if all(v.ok for _, _, v in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
