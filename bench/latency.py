"""Added latency: end-to-end publish-to-consume time through a raw forwarder and the router.

The same paths as bench/throughput.py, alternating A B C A B C ..., but at a fixed
publish rate well below every path's capacity (`--rate`), so the figures are the time a
message spends in each path and not time spent queueing behind other messages. One
producer connection publishes (persistent, confirmed, each publish in its own task);
consumers ack each message. A message's latency is from just before its publish to its
arrival at the consumer, on one clock.

The headline is router p50 minus raw-confirm p50, both over all rounds' samples.

    python bench/latency.py --json bench/results/latency.json
    python bench/latency.py --quick              # a few seconds: the CI smoke run
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from harness import latency_summary, machine_info, median, print_machine, print_table, write_json
from load import Load, Segment, run_segment
from throughput import apply_quick, loaded_world, parse, select_paths


def summarise(
    segments: Sequence[Segment], samples: dict[str, list[float]], base: str
) -> list[dict[str, Any]]:
    """Per path: pooled percentiles, the median of per-round p50s, and p50/p99 added."""
    pooled = {path: latency_summary(values) for path, values in samples.items()}
    rows = []
    for path, stats in pooled.items():
        rounds = [s.latency["p50_ms"] for s in segments if s.path == path]
        rows.append(
            {
                "path": path,
                **stats,
                "round_p50s_ms": rounds,
                "median_round_p50_ms": round(median(rounds), 3),
                "p50_added_ms": round(stats["p50_ms"] - pooled[base]["p50_ms"], 3),
                "p99_added_ms": round(stats["p99_ms"] - pooled[base]["p99_ms"], 3),
            }
        )
    return rows


async def run(args: Any) -> dict[str, Any]:
    """Run every round at the fixed rate and return the report."""
    samples: dict[str, list[float]] = {}
    size = int(args.sizes.split(",")[0])
    async with loaded_world(args, "latency") as (world, load):
        machine = await machine_info(world)
        print_machine(machine)
        paths = select_paths(world, args)

        async def drive(load: Load, batch: Sequence[tuple[str, bytes]]) -> float:
            return await load.paced(batch, args.rate, args.timeout)

        segments = []
        for round_no in range(1, args.rounds + 1):
            for path in paths:
                segment = await run_segment(
                    load, path, round_no=round_no, size=size, messages=args.messages,
                    warmup=args.warmup, drive=drive,
                )  # fmt: skip
                # The receiver still holds the timed batch's samples: pool them per path.
                samples.setdefault(path.name, []).extend(load.receiver.latencies_ms)
                segments.append(segment)
                stats = segment.latency
                print(
                    f"  round {round_no}  {path.name:<16} p50 {stats['p50_ms']:.2f} ms  "
                    f"p99 {stats['p99_ms']:.2f} ms  cpu {segment.cpu}",
                    flush=True,
                )
    base = paths[0].name
    rows = summarise(segments, samples, base)
    print()
    print_table(
        ["path", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50 added", "p99 added"],
        [
            [r["path"], r["n"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"],
             r["p50_added_ms"], r["p99_added_ms"]]
            for r in rows
        ],
    )  # fmt: skip
    print(f"  pooled over {args.rounds} round(s) at {args.rate:g} msg/s; added = path - {base}")
    return {
        "machine": machine,
        "parameters": {k: v for k, v in vars(args).items() if k != "json"},
        "summary": rows,
        "segments": [asdict(s) for s in segments],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write JSON if asked."""
    parser = parse(argv, __doc__ or "")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.set_defaults(messages=2_000, warmup=200, sizes="1024")
    args = apply_quick(parser.parse_args(argv))
    if args.quick:
        args.messages, args.warmup = 100, 20
    report = asyncio.run(run(args))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
