"""Where the router's time goes: a sampling profile of a router process under load.

Starts one router (`python -m broker router`, or a bench/router_variant.py variant with
--variant), drives it with the throughput benchmark's producers and consumers, and
samples it with py-spy (wall-clock stacks of the running process, not idle time; no
instrumentation overhead) while the timed batch flows. Without py-spy on the machine
(it is not a project dependency: `pip install py-spy`) the router runs under cProfile
instead, which is slower and only good for call counts.

Prints the share of samples by where the CPU was (the innermost Python frame's
package) and the inclusive share of the router's own functions.

    python bench/profile_router.py --json bench/results/profile.json
    python bench/profile_router.py --quick       # a few seconds: the CI smoke run
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import (
    machine_info,
    print_machine,
    print_table,
    router_argv,
    start_procs,
    stop_procs,
    write_json,
)
from throughput import apply_quick, loaded_world, parse

# The innermost Python frame's file decides the bucket; first match wins.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Ed25519 verify (PyNaCl/libsodium)", ("/nacl/",)),
    (
        "envelope validation (pydantic)",
        ("/pydantic/", "/pydantic_core/", "broker/core/envelope.py"),
    ),
    ("canonical JSON", ("broker/core/canonical.py", "/rfc8785/")),
    (
        "scoring, gates, decision",
        ("broker/core/scoring/", "broker/core/decision.py", "broker/core/policy.py"),
    ),
    ("Redis client (redis-py)", ("/redis/",)),
    ("AMQP client (aio-pika, aiormq, pamqp)", ("/aio_pika/", "/aiormq/", "/pamqp/")),
    ("event loop (asyncio)", ("/asyncio/", "/uvloop/", "selectors.py")),
    ("router, store, committer", ("broker/",)),
    ("other (stdlib, logging, uuid, ...)", ("",)),
)
# Router functions whose inclusive share is reported (name as py-spy prints it).
FUNCTIONS = (
    ("handle", "broker/router/service.py"),
    ("decode_envelope", "broker/core/envelope.py"),
    ("signature_valid", "broker/core/envelope.py"),
    ("decide", "broker/core/scoring/__init__.py"),
    ("claim", "broker/store/claims.py"),
    ("context", "broker/store/redis.py"),
    ("finish", "broker/store/claims.py"),
    ("_commit", "broker/router/service.py"),
    ("trust_headers", "broker/router/outbound.py"),
    ("delivery", "broker/router/outbound.py"),
    ("_commit_batch", "broker/amqp/committer.py"),
    ("_on_message", "broker/router/service.py"),
)


def parse_collapsed(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy raw output: 'frame;frame;... count' with frame 'func (file:line)'."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            frames.append((name, where.rstrip(")").rsplit(":", 1)[0]))
        stacks.append((frames, int(count)))
    return stacks


def bucket_of(path: str) -> str:
    """The bucket for a source file."""
    for name, needles in BUCKETS:
        if any(needle in path for needle in needles):
            return name
    return BUCKETS[-1][0]


def summarise_stacks(stacks: Sequence[tuple[list[tuple[str, str]], int]]) -> dict[str, Any]:
    """Self share by bucket, inclusive share of router functions, top self functions."""
    total = sum(count for _, count in stacks) or 1
    buckets: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        leaf_name, leaf_file = frames[-1]
        buckets[bucket_of(leaf_file)] += count
        leaves[f"{leaf_name} ({_short(leaf_file)})"] += count
        seen = {(name, _short(path)) for name, path in frames}
        for name, where in FUNCTIONS:
            # py-spy names methods Class.method.
            if any(n.rpartition(".")[2] == name and p.endswith(where) for n, p in seen):
                functions[f"{where}:{name}"] += count
    return {
        "samples": total,
        "self_by_bucket": {k: round(100 * v / total, 1) for k, v in buckets.most_common()},
        "inclusive_router_functions": {
            f"{where}:{name}": round(100 * functions[f"{where}:{name}"] / total, 1)
            for name, where in FUNCTIONS
        },
        "top_self_functions": {k: round(100 * v / total, 1) for k, v in leaves.most_common(15)},
    }


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3", "/bench-src/", "/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarise_cprofile(path: Path) -> dict[str, Any]:
    """Self time by bucket and the top functions from a cProfile dump."""
    stats = pstats.Stats(str(path))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1.0
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for (filename, _, name), (_, _, tottime, _, _) in raw.items():
        buckets[bucket_of(filename)] += tottime
        leaves[f"{name} ({_short(filename)})"] += tottime
    return {
        "samples": None,
        "self_by_bucket": {k: round(100 * v / total, 1) for k, v in buckets.most_common()},
        "inclusive_router_functions": {},
        "top_self_functions": {k: round(100 * v / total, 1) for k, v in leaves.most_common(15)},
    }


async def run(args: Any) -> dict[str, Any]:
    """Profile one router while the timed batch flows."""
    profiler = args.profiler
    if profiler == "auto":
        profiler = "py-spy" if shutil.which("py-spy") else "cprofile"
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    argv = router_argv(args.prefetch, args.variant.split() if args.variant else ())
    if profiler == "cprofile":
        argv = [argv[0], "-m", "cProfile", "-o", str(workdir / "router.prof"), *argv[1:]]
    size = int(args.sizes.split(",")[0])
    async with loaded_world(args, "profile") as (world, load):
        machine = await machine_info(world)
        print_machine(machine)
        procs = await start_procs(world, [("router", argv)])
        try:
            await load.blast(load.batch(args.warmup, size), args.window, args.timeout)
            batch = load.batch(args.messages, size)
            spy = _start_py_spy(procs[0].pid, workdir, args.rate) if profiler == "py-spy" else None
            if spy is not None:
                await asyncio.sleep(1.0)  # py-spy attaches before the timed batch starts
            seconds = await load.blast(batch, args.window, args.timeout)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
        finally:
            stop_procs(procs)
    if profiler == "py-spy":
        summary = summarise_stacks(parse_collapsed((workdir / "router.txt").read_text()))
    else:
        summary = summarise_cprofile(workdir / "router.prof")
    shutil.rmtree(workdir, ignore_errors=True)
    print_summary(summary, profiler, args.messages / seconds)
    return {
        "machine": machine,
        "parameters": {k: v for k, v in vars(args).items() if k != "json"},
        "profiler": profiler,
        "per_second": round(args.messages / seconds, 1),
        **summary,
    }


def _start_py_spy(pid: int, workdir: Path, rate: int) -> subprocess.Popen[bytes]:
    out = workdir / "router.txt"
    cmd = ["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    cmd += ["--full-filenames", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def print_summary(summary: dict[str, Any], profiler: str, per_second: float) -> None:
    """The two tables: where the CPU was, and the router's functions."""
    print(f"\nprofiler {profiler}, {summary['samples'] or '-'} samples, {per_second:,.0f} msg/s")
    buckets = list(summary["self_by_bucket"].items())
    print_table(["where (innermost frame)", "% of samples"], buckets)
    if summary["inclusive_router_functions"]:
        print()
        rows = list(summary["inclusive_router_functions"].items())
        print_table(["router function (inclusive)", "% of samples"], rows)
    print()
    print_table(["top functions (self)", "%"], list(summary["top_self_functions"].items())[:10])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the profile, print the tables, write JSON if asked."""
    parser = parse(argv, __doc__ or "")
    parser.add_argument("--profiler", choices=["auto", "py-spy", "cprofile"], default="auto")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--variant", default="", help='router_variant.py flags, e.g. "--rev 7690714"'
    )
    parser.set_defaults(messages=20_000, sizes="1024")
    args = apply_quick(parser.parse_args(argv))
    if args.quick:
        # A sampler needs the batch to last: 200 messages pass in a fraction of a second.
        args.messages = 2_000
    with contextlib.suppress(KeyboardInterrupt):
        report = asyncio.run(run(args))
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
