"""Trust efficacy: how often the broker's trust decisions are wrong, against an adversarial
population, through the broker's real decision path (bench/efficacy_engine.py).

    python bench/efficacy.py --seed 1                    # the full run, about 40 simulated days
    python bench/efficacy.py --seed 1 --write-docs       # ... and rewrite docs/EFFICACY.md
    python bench/efficacy.py --scale ci --check          # the small run CI asserts targets on

Needs Redis (the TRUST_* variables or --redis-url, as every benchmark); RabbitMQ is not
used: the simulation calls the router's decision pipeline directly on simulated time.
A run uses a private Redis key prefix and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from efficacy_engine import DAY_MS, Engine
from efficacy_metrics import check_targets, measure, tradeoff
from efficacy_report import write_plots, write_report
from efficacy_world import RATES, SCALES, World
from harness import add_server_args, server_config, write_json

from broker.app import open_store
from broker.clock import wall_clock_ms
from broker.core.policy import Policy, load_policy
from broker.peerview import describe_peer

REPO = Path(__file__).resolve().parents[1]


def simulation_policy() -> Policy:
    """The default policy, with the exchange rates a deployment taking these currencies
    must set (rates are configuration, not tuning)."""
    return load_policy({"currency": {"reference": "USD", "rates": RATES}})


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """One seeded run: build the world, play it, measure it."""
    scale = SCALES[args.scale]
    # One process makes every write, and the store drops its own cache entries on each, so
    # a long cache lifetime (in simulated time) changes no decision; it spares Redis trips.
    config = replace(
        server_config(args), key_prefix=f"efficacy-{uuid.uuid4().hex[:8]}:",
        cache_ttl_ms=10 * 60_000,
    )  # fmt: skip
    store = open_store(config)
    started = time.monotonic()
    try:
        # Simulated time starts now, so keys Redis expires by its own clock stay consistent.
        engine = Engine(store, config, simulation_policy(), args.seed, wall_clock_ms())
        await engine.setup()
        world = World(engine, scale)
        await world.populate()
        samples: list[dict[str, Any]] = []
        _schedule_samples(world, samples)
        await engine.run_until(world.end_ms, _progress(scale.days))
        print(file=sys.stderr)
        measured = measure(world, samples)
        measured["tradeoff"] = tradeoff(world)
        measured["run"] = {
            "seed": args.seed, "scale": args.scale, "days": scale.days,
            "warmup_days": scale.warmup_days, "messages": len(engine.sent),
            "agents": len(world.agents), "seconds": round(time.monotonic() - started, 1),
        }  # fmt: skip
        return measured
    finally:
        await store.purge()
        await store.close()


def _schedule_samples(world: World, samples: list[dict[str, Any]]) -> None:
    """Every 12 simulated hours, the composite of a few agents of every population."""
    engine = world.engine

    async def sample() -> None:
        day = (engine.now - engine.start_ms) / DAY_MS
        by_population: dict[str, list[Any]] = {}
        for agent in world.agents:
            if not agent.retired:
                by_population.setdefault(agent.population, []).append(agent)
        targets = {a.did for agents in world.slander_targets.values() for a in agents}
        for population, agents in by_population.items():
            chosen = agents[:8] + [a for a in agents[8:] if a.did in targets]
            for agent in chosen:
                view = await describe_peer(engine.store, agent.did, engine.now)
                samples.append({"day": round(day, 2), "population": population,
                                "agent": agent.name, "composite": view["composite"],
                                "tier": view["tier"], "target": agent.did in targets})  # fmt: skip
        if engine.now + DAY_MS // 2 < world.end_ms:
            engine.at(engine.now + DAY_MS // 2, sample)

    engine.at(engine.start_ms + DAY_MS // 2, sample)


def _progress(days: int) -> Any:
    def show(day: int) -> None:
        print(f"\r[efficacy] simulated day {day + 1}/{days}", end="", file=sys.stderr, flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every target holds (what CI runs)")  # fmt: skip
    parser.add_argument("--write-docs", action="store_true",
                        help="rewrite docs/EFFICACY.md and its plots from this run")  # fmt: skip
    parser.add_argument("--plots", default=str(REPO / "docs" / "efficacy"),
                        help="where the PNG plots go with --write-docs")  # fmt: skip
    add_server_args(parser)
    args = parser.parse_args(argv)
    measured = asyncio.run(run(args))
    targets = check_targets(measured)
    measured["targets"] = targets
    for target in targets:
        mark = "ok  " if target["ok"] else "FAIL"
        print(f"{mark} {target['name']}: {target['value']} (target {target['target']})")
    write_json(args.json, measured)
    if args.write_docs:
        plots = write_plots(measured, Path(args.plots))
        write_report(measured, REPO / "docs" / "EFFICACY.md", plots, command=_command(argv))
    return 1 if args.check and not all(t["ok"] for t in targets) else 0


# Where the servers are is not part of the result, and their URLs carry passwords.
_NOT_SHOWN = {"--amqp-url", "--redis-url", "--management-url", "--json", "--plots"}


def _command(argv: list[str] | None) -> str:
    """The command that reproduces this run, without server URLs (secrets) or outputs."""
    given = list(argv if argv is not None else sys.argv[1:])
    shown: list[str] = []
    skip = False
    for arg in given:
        if skip:
            skip = False
        elif arg.partition("=")[0] in _NOT_SHOWN:
            skip = "=" not in arg
        elif arg != "--write-docs":
            shown.append(arg)
    return "python bench/efficacy.py " + " ".join(shown)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the broker logs every corroboration
    sys.exit(main())
