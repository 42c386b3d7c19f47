"""State at scale: Redis memory per peer, router memory, and decision cost vs peer count.

For each population (default 100,000 and 1,000,000 distinct peers) it:

1. writes that many peer hashes under a fresh key prefix, with the same fields the store
   writes for a verified, trusted peer (possession, credential, history, streak, bond),
   pipelined 5,000 per round trip, and reads Redis INFO `used_memory` before and after;
2. times what the router does per message for a sender, `RedisStore.context()` plus
   `decide()`, for random senders out of the population, with the router's own bounded
   cache (100,000 entries, 2 s TTL by default):
     hit    the sender's state is cached (a working set of 1,000 hot senders)
     miss   it is not (uniform over the whole population: one HGETALL per message)
3. loads every peer of the population through that cache (pipelined HGETALL, decoded by
   the store's codec) and reads this process's RSS, to show the cache bound holding.

It also measures the Redis memory each routed message leaves behind (dedup claim, outcome
record, trace, decision log; each with its TTL) by routing messages through a real router,
since at a steady rate those, not peers, dominate Redis memory. Everything written is
deleted afterwards.

    python bench/state.py --json bench/results/state.json
    python bench/state.py --quick                # a few seconds: the CI smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from harness import (
    DAY_MS,
    World,
    add_server_args,
    latency_summary,
    machine_info,
    print_machine,
    print_table,
    private_world,
    recipients,
    router_argv,
    server_config,
    signed_batch,
    start_procs,
    stop_procs,
    trusted_senders,
    write_json,
)
from load import Load

from broker.app import open_store
from broker.clock import wall_clock_ms
from broker.core.envelope import DecodedEnvelope, decode_envelope
from broker.core.policy import Policy
from broker.core.scoring import decide
from broker.store import codec
from broker.store.redis import RedisStore

BASE58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BATCH = 5_000


def fake_dids(count: int, seed: int) -> list[str]:
    """Distinct, did:key-shaped ids of the real length (56 chars), quickly: the store
    never decodes a sender's DID, and real key generation would take minutes here."""
    rng = random.Random(seed)
    return ["did:key:z6Mk" + bytes(rng.choices(BASE58, k=44)).decode() for _ in range(count)]


def peer_fields(did: str, n: int, now: int, issuer: str) -> dict[str, bytes | str]:
    """The hash fields the store writes for a trusted peer (see broker/store/codec.py)."""
    credential = {
        "credential_id": f"cred-{n:08d}", "issuer": issuer, "subject": did,
        "organisation": "Example Logistics Ltd", "issued_at_ms": now - DAY_MS,
        "expires_at_ms": now + 300 * DAY_MS,
    }  # fmt: skip
    return {
        codec.POSSESSION_AT: str(now - 1_000),
        codec.POSSESSION_UNTIL: str(now + DAY_MS),
        codec.CREDENTIAL: orjson.dumps(credential),
        codec.SUCCESS_VALUE: "59.87",
        codec.SUCCESS_AT: str(now - n),
        codec.CLEAN: str(n % 100),
        codec.BOND: orjson.dumps({"amount_minor": 2_000_000, "currency": "USD"}),
    }


async def used_memory(store: RedisStore) -> int:
    """Redis INFO used_memory in bytes."""
    info = await store._redis.info("memory")
    return int(info["used_memory"])


async def populate(store: RedisStore, dids: Sequence[str], issuer: str) -> float:
    """Write every peer hash, BATCH per pipeline; return the seconds taken."""
    now = wall_clock_ms()
    started = time.perf_counter()
    for start in range(0, len(dids), BATCH):
        async with store._redis.pipeline(transaction=False) as pipe:
            for n, did in enumerate(dids[start : start + BATCH], start):
                pipe.hset(store.keys.peer(did), mapping=peer_fields(did, n, now, issuer))  # type: ignore[arg-type]
            await pipe.execute()
    return time.perf_counter() - started


async def delete_prefix(store: RedisStore, prefix: str) -> None:
    """UNLINK every key under `prefix`, a SCAN page per pipeline."""
    cursor = 0
    while True:
        cursor, keys = await store._redis.scan(cursor, match=prefix + "*", count=10_000)
        if keys:
            await store._redis.unlink(*keys)
        if cursor == 0:
            return


async def time_decisions(
    store: RedisStore, template: DecodedEnvelope, dids: Sequence[str], count: int
) -> dict[str, float]:
    """context() + decide() for each DID in turn, as the router does for a sender."""
    policy = Policy()
    samples = []
    for did in dids[:count]:
        env = template.envelope.model_copy(update={"sender": did})
        decoded = DecodedEnvelope(env, template.signed_bytes, template.size)
        now = wall_clock_ms()
        start = time.perf_counter_ns()
        ctx = await store.context(env, now, replayed=False)
        decide(decoded, ctx, policy, now, signature_ok=True)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return latency_summary(samples)


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def fill_cache(store: RedisStore, dids: Sequence[str]) -> int:
    """Read every peer into the store's bounded cache as the router would on a miss;
    return how many entries the cache holds afterwards."""
    now = wall_clock_ms()
    for start in range(0, len(dids), BATCH):
        chunk = dids[start : start + BATCH]
        async with store._redis.pipeline(transaction=False) as pipe:
            for did in chunk:
                pipe.hgetall(store.keys.peer(did))
            replies = await pipe.execute()
        for did, fields in zip(chunk, replies, strict=True):
            store._peers.put(did, codec.peer_from_hash(did, fields), now)
    return len(store._peers)


async def measure_population(
    args: argparse.Namespace, config: Any, template: DecodedEnvelope, count: int
) -> dict[str, Any]:
    """Populate `count` peers, measure, clean up."""
    prefix = f"{config.key_prefix}pop{count}:"
    store = open_store(replace(config, key_prefix=prefix))
    try:
        await store.register_recipient(_recipient_of(template))
        dids = fake_dids(count, seed=count)
        gc.collect()
        before = await used_memory(store)
        seconds = await populate(store, dids, issuer="did:key:z6MkIssuer")
        after = await used_memory(store)
        print(f"  {count:>9,} peers written in {seconds:.1f} s", flush=True)
        hot = random.Random(1).sample(dids, min(1_000, count))
        await time_decisions(store, template, hot, len(hot))  # fills the cache with them
        hit = await time_decisions(store, template, hot * 3, args.lookups)
        cold = random.Random(2).sample(dids, min(args.lookups, count))
        miss = await time_decisions(store, template, cold, args.lookups)
        rss_before = rss_bytes()
        long_lived = open_store(replace(config, key_prefix=prefix, cache_ttl_ms=3_600_000))
        cached = await fill_cache(long_lived, dids)
        gc.collect()
        rss_after = rss_bytes()
        await long_lived.close()
    finally:
        await delete_prefix(store, prefix)
        await store.close()
    return {
        "peers": count,
        "populate_seconds": round(seconds, 1),
        "redis_bytes_per_peer": round((after - before) / count),
        "redis_used_memory_mb": round(after / 2**20, 1),
        "decision_hit": hit,
        "decision_miss": miss,
        "cache_entries": cached,
        "cache_rss_mb": round((rss_after - rss_before) / 2**20, 1),
        "process_rss_mb": round(rss_after / 2**20, 1),
    }


def _recipient_of(template: DecodedEnvelope) -> Any:
    from broker.core.state import RecipientProfile

    return RecipientProfile(did=template.envelope.recipient)


async def per_message_bytes(
    world: World, senders: Any, to: Sequence[str], count: int
) -> tuple[float, dict[str, Any]]:
    """Redis bytes one routed message leaves behind (its dedup claim, outcome record,
    behaviour data, trace and decision-log entry, with their TTLs): `count` messages
    through a real router process, INFO used_memory before and after."""
    load = Load(world, senders, list(to))
    await load.open(1)
    procs = await start_procs(world, [("router", router_argv(512))])
    try:
        await load.blast(load.batch(200, 1024), 16, 120)
        await asyncio.sleep(1)  # the last finish() lands just after its delivery
        before = await used_memory(world.store)
        await load.blast(load.batch(count, 1024), 16, 300)
        await asyncio.sleep(1)
        after = await used_memory(world.store)
        breakdown = await key_breakdown(world.store, count + 200)  # with the warm-up's
    finally:
        stop_procs(procs)
        await load.close()
    return (after - before) / count, breakdown


async def key_breakdown(store: RedisStore, messages: int) -> dict[str, dict[str, Any]]:
    """MEMORY USAGE and TTL of every key under the world's prefix, by key kind."""
    kinds: dict[str, dict[str, Any]] = {}
    prefix = store.keys.prefix
    async for key in store._redis.scan_iter(match=prefix + "*", count=1_000):
        kind = key.decode()[len(prefix) :].split(":", 1)[0]
        entry = kinds.setdefault(kind, {"keys": 0, "bytes": 0, "ttl_hours": set()})
        entry["keys"] += 1
        entry["bytes"] += int(await store._redis.memory_usage(key) or 0)
        ttl = await store._redis.pttl(key)
        entry["ttl_hours"].add(round(ttl / 3_600_000) if ttl > 0 else None)
    return {
        kind: {
            "keys": e["keys"],
            "bytes_per_message": round(e["bytes"] / messages),
            "ttl_hours": sorted(e["ttl_hours"], key=lambda t: -1 if t is None else t),
        }
        for kind, e in sorted(kinds.items(), key=lambda item: -item[1]["bytes"])
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every population in turn, then the per-message keys."""
    populations = [int(n) for n in args.peers.split(",")]
    async with private_world(server_config(args), "state") as world:
        machine = await machine_info(world)
        print_machine(machine)
        senders = await trusted_senders(world.store, 2)
        to = await recipients(world, 2)
        template = decode_envelope(signed_batch(senders, to, 1, 1024)[0][1])
        # Before the populations: freeing them afterwards would skew used_memory.
        message_bytes, breakdown = await per_message_bytes(world, senders, to, args.messages)
        rows = [await measure_population(args, world.config, template, n) for n in populations]
    print()
    print_table(
        ["peers", "Redis B/peer", "Redis MB", "hit p50 ms", "hit p99 ms", "miss p50 ms",
         "miss p99 ms", "cache entries", "cache MB", "RSS MB"],
        [
            [r["peers"], r["redis_bytes_per_peer"], r["redis_used_memory_mb"],
             r["decision_hit"]["p50_ms"], r["decision_hit"]["p99_ms"],
             r["decision_miss"]["p50_ms"], r["decision_miss"]["p99_ms"],
             r["cache_entries"], r["cache_rss_mb"], r["process_rss_mb"]]
            for r in rows
        ],
    )  # fmt: skip
    print("  hit/miss: RedisStore.context() + decide() for one sender, cached or not;")
    print("  cache MB: RSS growth from loading every peer through the router's bounded cache")
    per_hour = message_bytes * 1_000 * 3_600 / 2**30
    print(
        f"\nper routed message: {message_bytes:,.0f} B of Redis (claim, outcome, trace, log);"
        f" at a steady 1,000 msg/s one hour of them is {per_hour:,.1f} GiB"
    )
    print_table(
        ["key kind", "keys", "bytes/message", "TTL hours (None: none)"],
        [[k, v["keys"], v["bytes_per_message"], v["ttl_hours"]] for k, v in breakdown.items()],
    )
    return {
        "machine": machine,
        "parameters": {k: v for k, v in vars(args).items() if k != "json"},
        "populations": rows,
        "redis_keys_per_message": breakdown,
        "redis_bytes_per_routed_message": round(message_bytes),
        "redis_gib_at_1000_msgs_per_s": round(per_hour, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write JSON if asked."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_args(parser)
    parser.add_argument("--peers", default="100000,1000000", help="populations to measure")
    parser.add_argument("--lookups", type=int, default=5_000, help="timed decisions per case")
    parser.add_argument("--messages", type=int, default=5_000, help="routed, for bytes/message")
    parser.add_argument("--quick", action="store_true", help="a few seconds: CI smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.peers, args.lookups, args.messages = "2000,5000", 200, 200
    report = asyncio.run(run(args))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
