"""Throughput: the trust router against a raw aio-pika forwarder, side by side in one run.

The same producers, consumers, message sizes and persistent, confirmed publishes go
through each path in turn, alternating A B C A B C ... (`--rounds` times per size):

  raw-confirm  bench/forwarder.py --mode confirm: consume, publish, ack after the confirm
  raw-tx       bench/forwarder.py --mode tx: publish + ack in grouped AMQP transactions,
               the router's own delivery discipline, without any trust check
  router       python -m broker router: decode, verify, claim, score, route, commit

Each path runs as its own process; producers and consumers run in this process. The
headline is the median over rounds of router msg/s divided by the raw forwarder's msg/s
in the same round. Needs RabbitMQ and Redis (TRUST_* variables, as for the CLI).

    python bench/throughput.py --json bench/results/throughput.json
    python bench/throughput.py --quick           # a few seconds: the CI smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from typing import Any

from harness import (
    World,
    add_server_args,
    machine_info,
    median,
    print_machine,
    print_table,
    private_world,
    recipients,
    redis_config,
    server_config,
    trusted_senders,
    write_json,
)
from load import BEFORE_REV, Load, Path, Segment, path_catalog, run_rounds

DEFAULT_PATHS = "raw-confirm,raw-tx,router"


def parse(argv: Sequence[str] | None, doc: str = __doc__ or "") -> argparse.ArgumentParser:
    """Flags shared by the throughput-style programs."""
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_server_args(parser)
    parser.add_argument("-n", "--messages", type=int, default=10_000, help="per timed segment")
    parser.add_argument("--warmup", type=int, default=500, help="untimed messages per segment")
    parser.add_argument("--rounds", type=int, default=3, help="A B C rounds per size")
    parser.add_argument("--sizes", default="1024,16384", help="envelope sizes in bytes")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--recipients", type=int, default=8)
    parser.add_argument("--producers", type=int, default=4, help="producer connections")
    parser.add_argument("--window", type=int, default=32, help="unconfirmed per producer")
    parser.add_argument("--prefetch", type=int, default=512, help="router/forwarder prefetch")
    parser.add_argument("--paths", default=DEFAULT_PATHS, help="comma-separated, see load.py")
    parser.add_argument(
        "--before",
        default=BEFORE_REV,
        help=f"git revision the router-before paths run (default {BEFORE_REV})",
    )
    parser.add_argument(
        "--redis-appendfsync",
        choices=["always", "everysec", "no"],
        help="set Redis's appendfsync for this run only (restored afterwards)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per segment")
    parser.add_argument("--quick", action="store_true", help="a few seconds: CI smoke run")
    return parser


def apply_quick(args: argparse.Namespace) -> argparse.Namespace:
    """Shrink everything to a seconds-long smoke run."""
    if args.quick:
        args.messages, args.warmup, args.rounds, args.sizes = 200, 20, 1, "1024"
        args.senders, args.recipients, args.producers = 2, 2, 2
    return args


@contextlib.asynccontextmanager
async def loaded_world(args: argparse.Namespace, name: str) -> AsyncIterator[tuple[World, Load]]:
    """A private world with trusted senders, recipients and the load generator open."""
    async with private_world(server_config(args), name) as world, _appendfsync(world, args):
        senders = await trusted_senders(world.store, args.senders)
        dids = await recipients(world, args.recipients)
        load = Load(world, senders, dids)
        await load.open(args.producers)
        try:
            yield world, load
        finally:
            await load.close()


@contextlib.asynccontextmanager
async def _appendfsync(world: World, args: argparse.Namespace) -> AsyncIterator[None]:
    if not args.redis_appendfsync:
        yield
        return
    before = await redis_config(world, "appendfsync")
    await world.store._redis.config_set("appendfsync", args.redis_appendfsync)
    try:
        yield
    finally:
        await world.store._redis.config_set("appendfsync", before)


def select_paths(world: World, args: argparse.Namespace) -> list[Path]:
    """The paths named by --paths."""
    catalog = path_catalog(world, args.prefetch, args.before)
    names = [name.strip() for name in args.paths.split(",") if name.strip()]
    unknown = [name for name in names if name not in catalog]
    if unknown:
        raise SystemExit(f"unknown path(s) {unknown}; known: {sorted(catalog)}")
    return [catalog[name] for name in names]


def paired_ratios(segments: Sequence[Segment], path: str, base: str) -> list[float]:
    """path msg/s / base msg/s within each (size, round): drift cancels within a round."""
    by_key = {(s.size, s.round, s.path): s.per_second for s in segments}
    ratios = []
    for (size, round_no, name), rate in by_key.items():
        other = by_key.get((size, round_no, base))
        if name == path and other:
            ratios.append(rate / other)
    return ratios


def summarise(segments: Sequence[Segment], paths: Sequence[str], base: str) -> list[dict[str, Any]]:
    """Per size and path: median msg/s, spread, ratio to `base`, median CPU per process."""
    rows = []
    for size in sorted({s.size for s in segments}):
        for path in paths:
            mine = [s for s in segments if s.size == size and s.path == path]
            if not mine:
                continue
            same_size = [s for s in segments if s.size == size]
            ratios = paired_ratios(same_size, path, base)
            cpu_names = sorted({name for s in mine for name in s.cpu})
            rows.append(
                {
                    "size": size,
                    "path": path,
                    "rounds": len(mine),
                    "median_per_second": round(median([s.per_second for s in mine]), 1),
                    "min_per_second": min(s.per_second for s in mine),
                    "max_per_second": max(s.per_second for s in mine),
                    f"ratio_vs_{base}": round(median(ratios), 3) if ratios else None,
                    "ratios": [round(r, 3) for r in ratios],
                    "cpu_cores": {
                        n: round(median([s.cpu[n] for s in mine if n in s.cpu]), 2)
                        for n in cpu_names
                    },
                    "ingress_backlog_max": max(s.ingress_backlog_max for s in mine),
                    "store_pauses": sum(s.store_pauses for s in mine),
                }
            )
    return rows


def print_summary(rows: Sequence[dict[str, Any]], base: str) -> None:
    """The throughput table."""
    table = []
    for row in rows:
        cpu = row["cpu_cores"]
        path_cpu = sum(v for k, v in cpu.items() if k.startswith(("router", "forwarder")))
        table.append(
            [
                f"{row['size']:,} B {row['path']}",
                row["median_per_second"],
                f"{row['min_per_second']:,.0f}-{row['max_per_second']:,.0f}",
                "" if row[f"ratio_vs_{base}"] is None else row[f"ratio_vs_{base}"],
                path_cpu,
                cpu.get("rabbitmq", float("nan")),
                cpu.get("redis", float("nan")),
                cpu.get("loadgen", float("nan")),
                cpu.get("others", float("nan")),
                row["ingress_backlog_max"],
                row["store_pauses"],
            ]
        )
    headers = [
        "size / path", "msg/s (median)", "range", f"x {base}", "cpu path",
        "cpu rabbit", "cpu redis", "cpu loadgen", "cpu others", "backlog", "pauses",
    ]  # fmt: skip
    print_table(headers, table)
    print("  cpu: cores busy over the timed segment (median over rounds); others: the rest of")
    print("  the machine (other tenants; this machine has 2 cores in all); backlog: most")
    print("  messages seen waiting in trust.ingress (growing = the path is the bottleneck);")
    print("  pauses: times a router stopped consuming because a Redis call failed")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every round and return the report."""
    sizes = [int(s) for s in args.sizes.split(",")]
    async with loaded_world(args, "throughput") as (world, load):
        machine = await machine_info(world)
        print_machine(machine)
        paths = select_paths(world, args)

        async def drive(load: Load, batch: Sequence[tuple[str, bytes]]) -> float:
            return await load.blast(batch, args.window, args.timeout)

        segments = await run_rounds(
            load, paths, rounds=args.rounds, sizes=sizes, messages=args.messages,
            warmup=args.warmup, drive=drive,
        )  # fmt: skip
    base = paths[0].name
    rows = summarise(segments, [p.name for p in paths], base)
    print()
    print_summary(rows, base)
    return {
        "machine": machine,
        "parameters": {k: v for k, v in vars(args).items() if k != "json"},
        "paths": {p.name: [list(argv) for _, argv in p.processes] for p in paths},
        "summary": rows,
        "segments": [asdict(s) for s in segments],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write JSON if asked."""
    args = apply_quick(parse(argv).parse_args(argv))
    report = asyncio.run(run(args))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
