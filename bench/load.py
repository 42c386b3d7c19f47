"""The load generator: the same producers and consumers for every path under test.

Producers publish pre-signed envelopes to `trust.ingress` as an agent does (persistent,
publisher confirms), over several connections with a window of unconfirmed publishes.
Consumers read every recipient queue on one connection and ack each message. Producers
and consumers share one process and one clock, so a message's end-to-end latency is the
time from just before its publish to its arrival at the consumer.

A *path* is what sits between ingress and the recipient queues: a raw forwarder or one or
more routers, each a subprocess. `run_rounds` alternates the paths A B A B ... so slow
drift on a shared machine hits every path alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection
from harness import (
    CpuMeter,
    World,
    forwarder_argv,
    latency_summary,
    router_argv,
    server_pids,
    signed_batch,
    start_procs,
    stop_procs,
    trusted_senders,
)

from broker.core.identity import AgentKey


@dataclass(frozen=True)
class Path:
    """What forwards ingress to the recipient queues: one or more processes."""

    name: str
    processes: tuple[tuple[str, tuple[str, ...]], ...]  # (label, argv) each


@dataclass
class Segment:
    """One timed run of one path."""

    path: str
    round: int
    size: int
    messages: int
    seconds: float
    per_second: float
    latency: dict[str, float]
    cpu: dict[str, float]
    ingress_backlog_max: int
    store_pauses: int  # "peer-state store unavailable: pausing" lines from the routers


class Receiver:
    """Consumes every recipient queue; records arrival time per message id."""

    def __init__(self) -> None:
        self.sent_ns: dict[str, int] = {}
        self.latencies_ms: list[float] = []
        self.received = 0
        self.target = 0
        self.last_ns = 0
        self.done = asyncio.Event()

    async def start(self, connection: AbstractRobustConnection, queues: Sequence[str]) -> None:
        """Consume each queue on its own channel (prefetch 256, manual acks)."""
        for name in queues:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=256)
            queue = await channel.get_queue(name, ensure=False)
            await queue.consume(self._on_message)

    def expect(self, count: int) -> None:
        """Start counting a new batch of `count` messages."""
        self.sent_ns.clear()
        self.latencies_ms = []
        self.received = 0
        self.target = count
        self.done.clear()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        now = time.perf_counter_ns()
        sent = self.sent_ns.pop(message.message_id or "", None)
        if sent is not None:
            self.latencies_ms.append((now - sent) / 1e6)
            self.received += 1
            self.last_ns = now
            if self.received >= self.target:
                self.done.set()
        await message.ack()


@dataclass
class Load:
    """Producers, the receiver and what they send."""

    world: World
    senders: list[AgentKey]
    recipients: list[str]
    producers: list[AbstractExchange] = field(default_factory=list)
    receiver: Receiver = field(default_factory=Receiver)
    connections: list[AbstractRobustConnection] = field(default_factory=list)

    async def open(self, producer_connections: int) -> None:
        """Open the producer connections (confirm channels) and start consuming."""
        topology = self.world.config.topology
        for _ in range(producer_connections):
            connection = await aio_pika.connect_robust(self.world.amqp_url)
            channel = await connection.channel(publisher_confirms=True)
            self.producers.append(
                await channel.get_exchange(topology.ingress_exchange, ensure=False)
            )
            self.connections.append(connection)
        consumer = await aio_pika.connect_robust(self.world.amqp_url)
        self.connections.append(consumer)
        queues = [topology.agent_queue(did) for did in self.recipients]
        await self.receiver.start(consumer, queues)

    async def close(self) -> None:
        """Close every connection."""
        for connection in self.connections:
            await connection.close()

    def batch(self, count: int, size: int) -> list[tuple[str, bytes]]:
        """Freshly signed envelopes (ids and nonces are single use)."""
        return signed_batch(self.senders, self.recipients, count, size)

    async def blast(self, batch: Sequence[tuple[str, bytes]], window: int, timeout: float) -> float:
        """Publish as fast as confirms allow (`window` unconfirmed per connection); return
        seconds from the first publish to the last delivery."""
        receiver = self.receiver
        receiver.expect(len(batch))
        items = iter(batch)

        async def worker(exchange: AbstractExchange) -> None:
            for message_id, raw in items:
                receiver.sent_ns[message_id] = time.perf_counter_ns()
                await exchange.publish(_message(message_id, raw), routing_key="")

        started = time.perf_counter_ns()
        workers = [worker(ex) for ex in self.producers for _ in range(window)]
        await asyncio.wait_for(asyncio.gather(*workers), timeout)
        await self._wait(timeout, len(batch))
        return (receiver.last_ns - started) / 1e9

    async def paced(self, batch: Sequence[tuple[str, bytes]], rate: float, timeout: float) -> float:
        """Publish at `rate` messages per second from one connection (each publish in its
        own task, so a slow confirm never delays the next send); return the seconds taken."""
        receiver = self.receiver
        receiver.expect(len(batch))
        exchange = self.producers[0]
        loop = asyncio.get_running_loop()
        started = loop.time()
        tasks = []
        for n, (message_id, raw) in enumerate(batch):
            delay = started + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            receiver.sent_ns[message_id] = time.perf_counter_ns()
            tasks.append(asyncio.create_task(exchange.publish(_message(message_id, raw), "")))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        await self._wait(timeout, len(batch))
        return loop.time() - started

    async def _wait(self, timeout: float, expected: int) -> None:
        try:
            await asyncio.wait_for(self.receiver.done.wait(), timeout)
        except TimeoutError:
            got = self.receiver.received
            raise SystemExit(
                f"only {got:,} of {expected:,} messages arrived within {timeout:.0f} s: "
                "is every sender trusted and every recipient bound? (see trust.blocked)"
            ) from None


def _message(message_id: str, raw: bytes) -> aio_pika.Message:
    return aio_pika.Message(
        raw,
        message_id=message_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


Runner = Callable[[Load, Sequence[tuple[str, bytes]]], Any]


async def run_segment(
    load: Load,
    path: Path,
    *,
    round_no: int,
    size: int,
    messages: int,
    warmup: int,
    drive: Runner,
) -> Segment:
    """Start the path's processes, warm them up, time one batch, stop them."""
    procs = await start_procs(load.world, [(label, list(argv)) for label, argv in path.processes])
    try:
        await drive(load, load.batch(warmup, size))
        batch = load.batch(messages, size)
        meter = CpuMeter({**await server_pids(load.world), **{p.label: p.pid for p in procs}})
        backlog, stop = _BacklogProbe(load.world), asyncio.Event()
        meter.start()
        probe = asyncio.create_task(backlog.run(stop))
        seconds = await drive(load, batch)
        cpu = meter.stop()
        stop.set()
        await probe
    finally:
        errors = stop_procs(procs)
    pauses = sum(text.count("pausing consumption") for text in errors.values())
    return Segment(
        path=path.name,
        round=round_no,
        size=size,
        messages=messages,
        seconds=round(seconds, 3),
        per_second=round(messages / seconds, 1),
        latency=latency_summary(load.receiver.latencies_ms),
        cpu=cpu,
        ingress_backlog_max=backlog.max_depth,
        store_pauses=pauses,
    )


class _BacklogProbe:
    """Samples the ingress queue depth: a growing backlog means the path is the bottleneck."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.max_depth = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every 250 ms on one channel of its own until `stop` is set."""
        channel = await self._world.connection.channel()
        name = self._world.config.topology.ingress_queue
        try:
            while not stop.is_set():
                # Straight to aiormq: aio-pika's robust channel hands back the queue it
                # declared first, with that first answer's message count.
                underlay = await channel.get_underlay_channel()
                declared = await underlay.queue_declare(name, passive=True)
                self.max_depth = max(self.max_depth, int(declared.message_count or 0))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
        finally:
            await channel.close()


async def run_rounds(
    load: Load,
    paths: Sequence[Path],
    *,
    rounds: int,
    sizes: Sequence[int],
    messages: int,
    warmup: int,
    drive: Runner,
) -> list[Segment]:
    """Every path once per round, in the same order each round (A B A B ...)."""
    segments = []
    for n, size in enumerate(sizes):
        if n:
            # The router watches each sender's message sizes, and a sender that jumps from
            # 1 KiB to 16 KiB is an anomaly (blocked): each size gets senders of its own.
            load.senders = await trusted_senders(load.world.store, len(load.senders))
        for round_no in range(1, rounds + 1):
            for path in paths:
                segment = await run_segment(
                    load, path, round_no=round_no, size=size, messages=messages,
                    warmup=warmup, drive=drive,
                )  # fmt: skip
                print(
                    f"  size {size:>6,}  round {round_no}  {path.name:<16} "
                    f"{segment.per_second:>9,.0f} msg/s  p50 {segment.latency['p50_ms']:.2f} ms"
                    f"  cpu {segment.cpu}",
                    flush=True,
                )
                segments.append(segment)
    return segments


# The router before session 2's optimisations (no-wait commit frames, cached peer kept
# after finish, uvloop, automatic Redis pipelining): the "before" of docs/PERFORMANCE.md.
BEFORE_REV = "7690714"


def path_catalog(world: World, prefetch: int, before: str = BEFORE_REV) -> dict[str, Path]:
    """Every path a benchmark can name: raw forwarders, the router, and router variants."""

    def router(*options: str) -> tuple[str, tuple[str, ...]]:
        return ("router", tuple(router_argv(prefetch, (), options)))

    def router_at(rev: str) -> tuple[str, tuple[str, ...]]:
        # As that revision shipped: its default prefetch was 128.
        return ("router", tuple(router_argv(prefetch, ("--rev", rev), ("--prefetch", "128"))))

    def raw(mode: str, loop: str = "asyncio") -> tuple[str, tuple[str, ...]]:
        return ("forwarder", tuple(forwarder_argv(world, mode, prefetch, loop)))

    return {
        "raw-confirm": Path("raw-confirm", (raw("confirm"),)),
        "raw-tx": Path("raw-tx", (raw("tx"),)),
        "router": Path("router", (router(),)),
        "raw-confirm-uvloop": Path("raw-confirm-uvloop", (raw("confirm", "uvloop"),)),
        "raw-tx-uvloop": Path("raw-tx-uvloop", (raw("tx", "uvloop"),)),
        "router-asyncio": Path("router-asyncio", (router("--loop", "asyncio"),)),
        "router-prefetch128": Path("router-prefetch128", (router("--prefetch", "128"),)),
        "router-before": Path("router-before", (router_at(before),)),
        "router-x2": Path("router-x2", (("router-1", router()[1]), ("router-2", router()[1]))),
        "router-before-x2": Path(
            "router-before-x2",
            (("router-1", router_at(before)[1]), ("router-2", router_at(before)[1])),
        ),
        "raw-tx-x2": Path(
            "raw-tx-x2", (("forwarder-1", raw("tx")[1]), ("forwarder-2", raw("tx")[1]))
        ),
    }
