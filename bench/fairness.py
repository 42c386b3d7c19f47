"""Fairness under a flood: an honest sender's latency alone and while another sender
publishes 5,000 messages as fast as it can, through the shared queue and through lanes.

Two provisioned, trusted agents on one router (a subprocess, as deployed). The honest
agent sends one message every `--interval-ms`; its latency is from just before the
publish to the arrival in its recipient's queue, on one clock. Each round measures the
honest sender alone (`--alone` messages), then starts the flood and samples the honest
sender until the whole flood has arrived. The flooder is a process of its own (as it
would be): pre-signed envelopes, every publish in flight at once, through AgentClient,
which retries a nacked publish with backoff. Two paths, alternating A B A B:

- shared: both agents publish to `trust.ingress` (one FIFO queue, how ingress worked
  before lanes; an agent login may no longer write there, so this uses the admin's);
- lanes:  each agent publishes with its own login to its own lane, `trust.in.<DID>`.

Reports, per path, the median over rounds of the honest p50 and p95 alone and under
the flood, the added p95, and how often the flooder was pushed back (nacked).

    python bench/fairness.py --json bench/results/fairness.json
    python bench/fairness.py --quick        # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from asyncio.subprocess import Process
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from harness import (
    Proc,
    World,
    add_server_args,
    latency_summary,
    machine_info,
    median,
    print_machine,
    print_table,
    private_world,
    process_env,
    router_argv,
    server_config,
    trusted_senders,
    write_json,
)

from broker.core.envelope import Envelope
from broker.core.identity import AgentKey
from broker.core.state import RecipientProfile
from broker.ops.provision import agent_amqp_url, provision_agent
from broker.sdk.client import AgentClient

PATHS = ("shared", "lanes")


@dataclass
class Arrivals:
    """Arrival times (perf_counter ns) by message id, across the recipients' queues."""

    at: dict[str, int] = field(default_factory=dict)
    flood: int = 0
    flood_done: asyncio.Event = field(default_factory=asyncio.Event)
    flood_target: int = 0
    honest: dict[str, asyncio.Future[int]] = field(default_factory=dict)

    async def on_honest(self, message: AbstractIncomingMessage) -> None:
        waiting = self.honest.get(message.message_id or "")
        if waiting is not None and not waiting.done():
            waiting.set_result(time.perf_counter_ns())
        await message.ack()

    async def on_flood(self, message: AbstractIncomingMessage) -> None:
        self.flood += 1
        if self.flood_target and self.flood >= self.flood_target:
            self.flood_done.set()
        await message.ack()


@dataclass
class Cast:
    """The honest sender (one client per path), the flooder (its key and one URL per
    path, for its process) and the two recipients."""

    honest: dict[str, AgentClient]
    flooder: AgentKey
    flooder_urls: dict[str, str]
    honest_to: str
    flood_to: str


async def _cast(world: World, publish_timeout: float, flood_blocked: bool) -> Cast:
    store, config = world.store, world.config
    honest_key, flooder_key = await trusted_senders(store, 2)
    if flood_blocked:
        flooder_key = AgentKey.generate()  # no evidence at all: every message is blocked
    to = [AgentKey.generate().did for _ in range(2)]
    for did in to:
        await provision_agent(config, store, RecipientProfile(did=did))
    urls: dict[str, dict[str, str]] = {}
    for role, key in (("honest", honest_key), ("flooder", flooder_key)):
        creds = await provision_agent(config, store, RecipientProfile(did=key.did))
        # lanes: the agent's own login; shared: the admin's, which may write trust.ingress.
        urls[role] = {"lanes": agent_amqp_url(config, creds), "shared": world.amqp_url}
    honest = {}
    for path, url in urls["honest"].items():
        client = await AgentClient(honest_key, url, publish_timeout=publish_timeout).connect()
        expected = config.topology.lane_exchange(honest_key.did) if path == "lanes" else None
        assert client.ingress_exchange == (expected or config.topology.ingress_exchange)
        honest[path] = client
    return Cast(honest, flooder_key, urls["flooder"], to[0], to[1])


async def flood_worker() -> None:
    """The flooder's process: read its orders on stdin, sign, say `ready`, wait for `go`,
    publish everything at once, print what happened as JSON."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    orders = orjson.loads(await reader.readline())
    key = AgentKey(bytes.fromhex(orders["seed"]))
    client = await AgentClient(key, orders["url"], publish_timeout=orders["timeout"]).connect()
    flood = [client.envelope(orders["to"], {"task": "flood"}) for _ in range(orders["count"])]
    print("ready", flush=True)
    await reader.readline()
    started = time.perf_counter()
    await asyncio.gather(*(client.send_envelope(envelope) for envelope in flood))
    published_s = time.perf_counter() - started
    print(orjson.dumps({"published_s": published_s, "pushbacks": client.pushbacks}).decode())
    await client.close()


async def _start_flooder(cast: Cast, path: str, args: argparse.Namespace) -> Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--flood-worker",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    orders = {"seed": cast.flooder.seed.hex(), "url": cast.flooder_urls[path],
              "to": cast.flood_to, "count": args.flood, "timeout": args.timeout}  # fmt: skip
    process.stdin.write(orjson.dumps(orders) + b"\n")
    await process.stdin.drain()
    line = await asyncio.wait_for(process.stdout.readline(), 120)
    if line.strip() != b"ready":
        raise SystemExit(f"the flooder did not start: {line!r}")
    return process


async def _honest(
    client: AgentClient,
    to: str,
    arrivals: Arrivals,
    interval_s: float,
    stop: asyncio.Event,
    limit: int = 0,
    confirms: list[float] | None = None,
) -> list[float]:
    """Send one message every interval until `stop` (or `limit` messages); latencies in ms
    (and, into `confirms`, how long each publish took to be confirmed)."""
    waits: list[asyncio.Task[float]] = []

    async def one(envelope: Envelope) -> float:
        arrived = arrivals.honest[envelope.id] = asyncio.get_running_loop().create_future()
        started = time.perf_counter_ns()
        await client.send_envelope(envelope)
        if confirms is not None:
            confirms.append((time.perf_counter_ns() - started) / 1e6)
        return (await asyncio.wait_for(arrived, 120) - started) / 1e6

    next_at = time.perf_counter()
    while not stop.is_set() and (not limit or len(waits) < limit):
        waits.append(asyncio.create_task(one(client.envelope(to, {"task": "ping"}))))
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return list(await asyncio.gather(*waits))


async def _round(world: World, cast: Cast, path: str, args: argparse.Namespace) -> dict[str, Any]:
    """One path: the honest sender alone, then during a flood."""
    arrivals = Arrivals(flood_target=args.flood)
    connection = await aio_pika.connect(world.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        topology = world.config.topology
        honest_q = await channel.get_queue(topology.agent_queue(cast.honest_to), ensure=False)
        await honest_q.consume(arrivals.on_honest)
        if args.flood_blocked:  # the flood's records, from now on
            flood_q = await channel.get_queue(topology.blocked_stream, ensure=False)
            await flood_q.consume(arrivals.on_flood, arguments={"x-stream-offset": "next"})
        else:
            flood_q = await channel.get_queue(topology.agent_queue(cast.flood_to), ensure=False)
            await flood_q.consume(arrivals.on_flood)
        honest = cast.honest[path]
        flooder = await _start_flooder(cast, path, args)
        assert flooder.stdin is not None and flooder.stdout is not None
        interval = args.interval_ms / 1000
        never = asyncio.Event()
        alone = await _honest(honest, cast.honest_to, arrivals, interval, never, args.alone)
        started = time.perf_counter()
        flooder.stdin.write(b"go\n")
        await flooder.stdin.drain()
        confirms: list[float] = []
        sampling = asyncio.create_task(
            _honest(honest, cast.honest_to, arrivals, interval, arrivals.flood_done, 0, confirms)
        )
        await asyncio.wait_for(arrivals.flood_done.wait(), args.timeout)
        routed_s = time.perf_counter() - started
        during = await sampling
        report = orjson.loads(await asyncio.wait_for(flooder.stdout.readline(), args.timeout))
        await flooder.wait()
    quiet, loud = latency_summary(alone), latency_summary(during)
    p95 = {"alone": _p95(alone), "flood": _p95(during)}
    return {
        "path": path,
        "alone": {**quiet, "p95_ms": p95["alone"]},
        "flood": {**loud, "p95_ms": p95["flood"]},
        "added_p95_ms": round(p95["flood"] - p95["alone"], 3),
        # Of the honest latency under the flood: the publish's own confirm.
        "flood_confirm_p50_ms": latency_summary(confirms)["p50_ms"],
        "flood_confirm_p95_ms": _p95(confirms),
        "flood_published_s": round(report["published_s"], 3),
        "flood_routed_s": round(routed_s, 3),
        "flood_pushbacks": report["pushbacks"],
    }


def _p95(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))
    return round(ordered[index], 3)


def summarise(rounds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per path: the median over rounds of each figure."""
    rows = []
    for path in PATHS:
        mine = [r for r in rounds if r["path"] == path]
        if not mine:
            continue

        def med(*keys: str, rows: list[dict[str, Any]] = mine) -> float:
            values = []
            for r in rows:
                value: Any = r
                for key in keys:
                    value = value[key]
                values.append(float(value))
            return round(median(values), 3)

        rows.append(
            {
                "path": path,
                "rounds": len(mine),
                "alone_p50_ms": med("alone", "p50_ms"),
                "alone_p95_ms": med("alone", "p95_ms"),
                "flood_p50_ms": med("flood", "p50_ms"),
                "flood_p95_ms": med("flood", "p95_ms"),
                "added_p95_ms": med("added_p95_ms"),
                "flood_routed_s": med("flood_routed_s"),
                "flood_pushbacks": med("flood_pushbacks"),
            }
        )
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every round, alternating the paths; the report."""
    async with private_world(server_config(args), "fairness") as world:
        machine = await machine_info(world)
        print_machine(machine)
        # The router with the router's own lane prefetch (the default) and the admin's
        # login (the bench world grants nothing else); see docs/PERFORMANCE.md.
        options = ["--lane-prefetch", str(args.lane_prefetch)] if args.lane_prefetch else []
        proc = Proc("router", router_argv(args.prefetch, options=options), process_env(world))
        try:
            cast = await _cast(world, args.timeout, args.flood_blocked)
            await _started(world, proc)
            rounds = []
            for number in range(args.rounds):
                for path in PATHS:
                    row = await _round(world, cast, path, args)
                    print(
                        f"round {number + 1} {path:6}: alone p50 {row['alone']['p50_ms']:.1f} "
                        f"p95 {row['alone']['p95_ms']:.1f} ms; flood p50 "
                        f"{row['flood']['p50_ms']:.1f} p95 {row['flood']['p95_ms']:.1f} ms, "
                        f"confirm p50 {row['flood_confirm_p50_ms']:.1f} "
                        f"p95 {row['flood_confirm_p95_ms']:.1f} ms "
                        f"(n={row['flood']['n']}, flood routed in {row['flood_routed_s']:.1f}s, "
                        f"{row['flood_pushbacks']} pushbacks)",
                        flush=True,
                    )
                    rounds.append(row)
                    await asyncio.sleep(1.0)
            for client in cast.honest.values():
                await client.close()
        finally:
            errors = proc.stop()
            if errors.strip():
                print(errors[-2000:])
    summary = summarise(rounds)
    print()
    print_table(
        ["path", "rounds", "alone p50", "alone p95", "flood p50", "flood p95", "added p95",
         "flood routed s", "pushbacks"],
        [[r["path"], r["rounds"], r["alone_p50_ms"], r["alone_p95_ms"], r["flood_p50_ms"],
          r["flood_p95_ms"], r["added_p95_ms"], r["flood_routed_s"], r["flood_pushbacks"]]
         for r in summary],
    )  # fmt: skip
    settings = {k: v for k, v in vars(args).items() if k not in ("json",)}
    return {"machine": machine, "settings": settings, "summary": summary, "rounds": rounds}


async def _started(world: World, proc: Proc, timeout: float = 30.0) -> None:
    """Wait until the router consumes the lanes of all four agents and trust.ingress."""
    deadline = time.monotonic() + timeout
    while True:
        channel = await world.connection.channel()
        try:
            underlay = await channel.get_underlay_channel()
            lanes = await world.store.lanes()
            names = [world.config.topology.ingress_queue]
            names += [world.config.topology.lane_queue(did) for did in lanes]
            counts = [
                (await underlay.queue_declare(name, passive=True)).consumer_count or 0
                for name in names
            ]
        finally:
            await channel.close()
        if len(names) == 5 and min(counts) >= 1:
            return
        if not proc.alive() or time.monotonic() > deadline:
            raise SystemExit(f"the router did not start consuming:\n{proc.stop()}")
        await asyncio.sleep(0.1)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per path (default 3)")
    parser.add_argument("--flood", type=int, default=5000, help="flood messages per round")
    parser.add_argument("--alone", type=int, default=100, help="honest messages alone")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="honest send interval")
    parser.add_argument("--prefetch", type=int, default=512, help="the router's ingress prefetch")
    parser.add_argument("--lane-prefetch", type=int, help="the router's per-lane prefetch")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per flood")
    parser.add_argument(
        "--flood-blocked", action="store_true", help="a flooder with no evidence (all blocked)"
    )
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--flood-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.alone, args.flood = 1, 20, 500
    return args


def main() -> None:
    """Run and print; --json writes the report too."""
    args = parse()
    if args.flood_worker:
        asyncio.run(flood_worker())
        return
    report = asyncio.run(run(args))
    write_json(args.json, report)


if __name__ == "__main__":
    main()
