"""Plumbing shared by the benchmarks that need RabbitMQ and Redis.

A benchmark gets a private world on the servers (a fresh vhost and Redis key prefix,
removed afterwards), trusted senders and registered recipients, routers and raw
forwarders as subprocesses (each a separate OS process, as in a deployment), CPU
accounting per process, and the table/JSON helpers every program prints with.

Where the servers are comes from the same TRUST_* variables the CLI reads (see
`broker.cli.settings.broker_config`), or from --amqp-url, --redis-url and --management-url.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import orjson

import broker
from broker.amqp.management import ManagementAPI
from broker.amqp.topology import declare_agent_queue, declare_router_topology
from broker.app import open_store
from broker.cli.settings import broker_config
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.envelope import encode_envelope, sign_envelope
from broker.core.identity import AgentKey
from broker.core.policy import BehaviorModel, Policy
from broker.core.state import Bond, Credential, IssuerRole, RecipientProfile
from broker.peerview import describe_peer
from broker.store.redis import RedisStore

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
DAY_MS = 86_400_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- where the servers are -------------------------------------------------------------------


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """--amqp-url/--redis-url/--management-url (defaults: TRUST_* as the CLI reads them)."""
    parser.add_argument("--amqp-url", help="RabbitMQ URL (env TRUST_AMQP_URL / TRUST_AMQP_PORT)")
    parser.add_argument("--redis-url", help="Redis URL (env TRUST_REDIS_URL / TRUST_REDIS_PORT)")
    parser.add_argument("--management-url", help="RabbitMQ management API URL")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def server_config(args: argparse.Namespace) -> BrokerConfig:
    """Connection settings: flags, then TRUST_* variables, then the CLI's defaults."""
    flags = argparse.Namespace(
        amqp_url=args.amqp_url,
        redis_url=args.redis_url,
        management_url=args.management_url,
        vhost=None,
        key_prefix=None,
    )
    return broker_config(os.environ, flags)


@dataclass
class World:
    """One benchmark's private vhost and key prefix on the shared servers."""

    config: BrokerConfig
    store: RedisStore
    connection: aio_pika.abc.AbstractRobustConnection
    broker_key_file: Path

    @property
    def amqp_url(self) -> str:
        """The admin's URL of the private vhost."""
        return self.config.amqp_vhost_url


@contextlib.asynccontextmanager
async def private_world(base: BrokerConfig, name: str) -> AsyncIterator[World]:
    """A fresh vhost (router topology declared) and Redis prefix; both removed afterwards."""
    vhost = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    api = ManagementAPI(base.management_url)
    await asyncio.to_thread(api.put_vhost, vhost)
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    # The admin's login (from the management URL; the servers create no guest).
    admin = unquote(urlsplit(base.management_url).username or "")
    await asyncio.to_thread(api.set_permissions, vhost, admin, everything)
    config = replace(base, vhost=vhost, key_prefix=f"{vhost}:")
    store = open_store(config)
    # The load is a flood from a few senders, far above the per-minute rate they showed in
    # earlier segments: the velocity detector rightly flags it and would block the rest.
    # Benchmarks measure the deliver path, so the bench policy lifts the rate floor.
    flood = Policy(behavior=BehaviorModel(rate_floor_per_minute=1_000_000_000))
    await store.save_policy(flood, who="bench", why="synthetic flood: no velocity anomaly")
    connection = await aio_pika.connect_robust(config.amqp_vhost_url)
    key_file = Path("/tmp") / f"{vhost}.broker.key"
    try:
        channel = await connection.channel()
        await declare_router_topology(channel, config.topology)
        await channel.close()
        yield World(config, store, connection, key_file)
    finally:
        await connection.close()
        with contextlib.suppress(Exception):
            await store.purge()
        await store.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(api.delete_vhost, vhost)
        key_file.unlink(missing_ok=True)


# -- agents ---------------------------------------------------------------------------------


async def trusted_senders(store: RedisStore, count: int) -> list[AgentKey]:
    """`count` senders at the trusted tier: possession, credential, history, bond.

    Written straight through RedisStore (what the handshake and `present` would record),
    which is fine for a benchmark: the router reads the same state either way.
    """
    now = wall_clock_ms()
    issuer = AgentKey.generate()
    await store.add_issuer(issuer.did, {IssuerRole.IDENTITY, IssuerRole.STAKE})
    senders = [AgentKey.generate() for _ in range(count)]
    for n, key in enumerate(senders):
        await store.record_possession(key.did, now - 1_000, now + DAY_MS)
        credential = Credential(
            f"cred-bench-{n}", issuer.did, key.did, "Bench Ltd", now - DAY_MS, now + DAY_MS
        )
        await store.set_credential(credential)
        for _ in range(60):
            await store.add_outcome(key.did, success=True, weight=1.0, now_ms=now, policy=Policy())
        await store.set_clean_streak(key.did, 60)
        bond = Bond(f"bond-bench-{n}", issuer.did, 20_000_00, "USD", now - DAY_MS, now + DAY_MS)
        await store.set_bond(key.did, bond)
    view = await describe_peer(store, senders[0].did, wall_clock_ms())
    if view["tier"] not in ("trusted", "established"):
        raise SystemExit(f"benchmark setup is wrong: sender tier {view['tier']}")
    return senders


async def recipients(world: World, count: int) -> list[str]:
    """`count` registered recipients, each with its queue bound to trust.deliver."""
    dids = [AgentKey.generate().did for _ in range(count)]
    channel = await world.connection.channel()
    for did in dids:
        await declare_agent_queue(channel, world.config.topology, did)
        await world.store.register_recipient(RecipientProfile(did=did))
    await channel.close()
    return dids


def signed_batch(
    senders: Sequence[AgentKey], to: Sequence[str], count: int, size: int
) -> list[tuple[str, bytes]]:
    """`count` (id, wire bytes) data envelopes of about `size` bytes, round-robin over
    senders and recipients, each with its own id and nonce."""
    now = wall_clock_ms()
    run = uuid.uuid4().hex[:12]
    out = []
    pad = ""
    for n in range(count):
        sender = senders[n % len(senders)]
        recipient = to[n % len(to)]
        envelope = sign_envelope(
            sender,
            id=f"b-{run}-{n:08d}",
            recipient=recipient,
            kind="data",
            created_at=now,
            nonce=os.urandom(16).hex(),
            body={"task": "quote", "n": n, "pad": pad},
        )
        raw = encode_envelope(envelope)
        if n == 0 and len(raw) < size:
            # Grow the body once so every envelope is about `size` bytes; then redo n=0.
            pad = "x" * (size - len(raw))
            envelope = sign_envelope(
                sender, id=envelope.id, recipient=recipient, kind="data", created_at=now,
                nonce=envelope.nonce, body={"task": "quote", "n": n, "pad": pad},
            )  # fmt: skip
            raw = encode_envelope(envelope)
        out.append((envelope.id, raw))
    return out


# -- subprocesses --------------------------------------------------------------------------


class Proc:
    """A router or forwarder subprocess: started, CPU-accounted, stopped with SIGTERM."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str]) -> None:
        self.label = label
        self.argv = argv
        # A file, not a pipe: a pipe nobody reads fills up and blocks the process.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._popen = subprocess.Popen(
            argv, env=env, cwd=BENCH, stdout=subprocess.DEVNULL, stderr=self._stderr
        )

    @property
    def pid(self) -> int:
        """The OS process id."""
        return self._popen.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self._popen.poll() is None

    def stop(self, timeout: float = 15.0) -> str:
        """SIGTERM, wait, SIGKILL if needed; returns what it wrote to stderr."""
        if self.alive():
            self._popen.send_signal(signal.SIGTERM)
        try:
            self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")
        self._stderr.close()
        return err


def process_env(world: World) -> dict[str, str]:
    """The TRUST_* environment a router needs to join this world."""
    config = world.config
    return {
        **os.environ,
        "TRUST_AMQP_URL": config.amqp_url,
        "TRUST_REDIS_URL": config.redis_url,
        "TRUST_MANAGEMENT_URL": config.management_url,
        "TRUST_VHOST": config.vhost,
        "TRUST_KEY_PREFIX": config.key_prefix,
        "TRUST_BROKER_KEY": str(world.broker_key_file),
        "TRUST_LOG_LEVEL": "WARNING",
    }


def router_argv(
    prefetch: int, variant: Sequence[str] = (), options: Sequence[str] = ()
) -> list[str]:
    """`python -m broker router [options]`, or through bench/router_variant.py (another
    revision of the code) when `variant` is given."""
    cli = ["--log-level", "WARNING", "router", "--prefetch", str(prefetch), *options]
    if not variant:
        return [sys.executable, "-m", "broker", *cli]
    return [sys.executable, str(BENCH / "router_variant.py"), *variant, "--", *cli]


def forwarder_argv(world: World, mode: str, prefetch: int, loop: str = "asyncio") -> list[str]:
    """bench/forwarder.py: the plain aio-pika forwarder."""
    return [
        sys.executable, str(BENCH / "forwarder.py"), "--amqp-url", world.amqp_url,
        "--mode", mode, "--prefetch", str(prefetch), "--loop", loop,
    ]  # fmt: skip


async def ingress_consumers(world: World) -> int:
    """How many consumers the ingress queue has now."""
    channel = await world.connection.channel()
    try:
        # Straight to aiormq: aio-pika's robust channel would return a cached answer.
        underlay = await channel.get_underlay_channel()
        declared = await underlay.queue_declare(world.config.topology.ingress_queue, passive=True)
        return int(declared.consumer_count or 0)
    finally:
        await channel.close()


async def start_procs(world: World, specs: Sequence[tuple[str, list[str]]]) -> list[Proc]:
    """Start processes and wait until each consumes ingress (30 s at most)."""
    env = process_env(world)
    procs = [Proc(label, argv, env) for label, argv in specs]
    deadline = time.monotonic() + 30
    while await ingress_consumers(world) < len(procs):
        dead = [p for p in procs if not p.alive()]
        if dead or time.monotonic() > deadline:
            errors = "\n".join(p.stop() for p in procs)
            raise SystemExit(f"{[p.label for p in procs]} did not start consuming:\n{errors}")
        await asyncio.sleep(0.05)
    return procs


def stop_procs(procs: Sequence[Proc]) -> dict[str, str]:
    """Stop every process; return what each wrote to stderr (routers run at WARNING, so
    anything there matters) and show the tail of it."""
    errors = {}
    for proc in procs:
        err = proc.stop().strip()
        errors[proc.label] = err
        if err:
            lines = err.splitlines()
            tail = "\n    ".join(lines[-3:])
            print(
                f"  [{proc.label}: {len(lines)} stderr line(s), last:]\n    {tail}", file=sys.stderr
            )
    return errors


# -- CPU accounting -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc, if readable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def server_pids(world: World) -> dict[str, int]:
    """RabbitMQ's and Redis's OS pids (management API, INFO), when they say."""
    pids: dict[str, int] = {}
    with contextlib.suppress(Exception):
        api = ManagementAPI(world.config.management_url)
        nodes = await asyncio.to_thread(api.request, "GET", "/api/nodes")
        pids["rabbitmq"] = int(nodes[0]["os_pid"])
    with contextlib.suppress(Exception):
        info = await world.store._redis.info("server")
        pids["redis"] = int(info["process_id"])
    return pids


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy (all cores, not idle or iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


class CpuMeter:
    """CPU used by named processes, and by everything else, between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = {**pids, "loadgen": os.getpid()}
        self._start: dict[str, float | None] = {}
        self._machine: float | None = None
        self._t0 = 0.0

    def start(self) -> None:
        """Take the first reading."""
        self._t0 = time.perf_counter()
        self._start = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        self._machine = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        """Cores used by each process over the interval (1.0 = one core busy all along);
        `others` is what the rest of the machine used meanwhile (other tenants: noise)."""
        wall = time.perf_counter() - self._t0
        used = {}
        for name, pid in self._pids.items():
            before, after = self._start.get(name), cpu_seconds(pid)
            if before is not None and after is not None and wall > 0:
                used[name] = round((after - before) / wall, 3)
        machine = machine_busy_seconds()
        if machine is not None and self._machine is not None and wall > 0:
            total = (machine - self._machine) / wall
            used["others"] = round(max(0.0, total - sum(used.values())), 3)
        return used


# -- statistics, tables, JSON ---------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean of latency samples in ms."""
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "p50_ms": round(percentile(ordered, 50), 3),
        "p90_ms": round(percentile(ordered, 90), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "max_ms": round(ordered[-1], 3) if ordered else float("nan"),
        "mean_ms": round(statistics.fmean(ordered), 3) if ordered else float("nan"),
    }


def median(values: Sequence[float]) -> float:
    """The median, or nan for no values."""
    return statistics.median(values) if values else float("nan")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        # The first column is a label (left-aligned); the rest are numbers.
        padded = [
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(padded)

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: str | None, report: dict[str, Any]) -> None:
    """Write the report when --json was given."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"results written to {path}")


# -- what ran where ---------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    names = ["aio-pika", "aiormq", "redis", "orjson", "pydantic", "PyNaCl", "uvloop"]
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def _source_state() -> dict[str, str]:
    """The commit, and where the broker package ran from with a hash of its sources: a run
    may use a frozen copy (PYTHONPATH, with a COMMIT file beside it) while others edit."""
    package = Path(broker.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.read_bytes())
    marker = package.parent / "COMMIT"
    if marker.exists():
        commit = marker.read_text().strip()
    else:
        git = ["git", "rev-parse", "--short", "HEAD"]
        found = subprocess.run(git, cwd=package, capture_output=True, text=True, check=False)
        commit = found.stdout.strip() or "unknown"
    return {
        "commit": commit,
        "broker_package": str(package),
        "broker_sources_sha256": digest.hexdigest()[:16],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


async def machine_info(world: World | None = None) -> dict[str, Any]:
    """CPU, Python, library and server versions, Redis durability settings, source state."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "libraries": _versions(),
        **_source_state(),
    }
    if world is not None:
        info.update(await _server_versions(world))
    return info


async def _server_versions(world: World) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        api = ManagementAPI(world.config.management_url)
        overview = await asyncio.to_thread(api.request, "GET", "/api/overview")
        found["rabbitmq"] = overview["rabbitmq_version"]
        found["erlang"] = overview["erlang_version"]
    with contextlib.suppress(Exception):
        found["redis"] = (await world.store._redis.info("server"))["redis_version"]
        found["redis_appendfsync"] = await redis_config(world, "appendfsync")
    return found


async def redis_config(world: World, name: str) -> str:
    """One Redis CONFIG GET value as text."""
    # redis-py types the reply as decoded text; the store's client answers in bytes.
    found: dict[Any, Any] = await world.store._redis.config_get(name)
    value = found.get(name, found.get(name.encode(), ""))
    return value.decode() if isinstance(value, bytes) else str(value)


def print_machine(info: dict[str, Any]) -> None:
    """The machine block every program prints first."""
    for key, value in info.items():
        print(f"{key:<22} {value}")
    print()
