"""Finding one record on a 100,000-record blocked stream: a seek against a scan.

For the oldest, a middle and the newest record of the stream, in the same run:
  scan   read from the start until the record turns up (what `blocked show` did; it then
         crashed on the nack, see issue 12)
  seek   find_blocked as `blocked show` runs it: the time in the trace id, no offset known
  again  find_blocked once the offset is remembered (what release does after show)
and `tail`, the newest 50 records (read backwards from the end). Each is timed (median of
--rounds) with the number of records read.

    python bench/blocked_stream.py --vhost VHOST --prefix PREFIX   # an existing stream
    python bench/blocked_stream.py                                 # builds one (~1.5 min)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.amqp.streams import ReadStats
from broker.app import open_store
from broker.config import BrokerConfig
from broker.core.records import BlockedFilter
from broker.ops.find import find_blocked
from broker.ops.reading import read_blocked, tail_blocked


async def _timed(work: Any) -> tuple[float, int]:
    stats = ReadStats()
    started = time.perf_counter()
    await work(stats)
    return time.perf_counter() - started, stats.messages


async def measure(config: BrokerConfig, rounds: int) -> dict[str, Any]:
    oldest = (await read_blocked(config, offset="first", limit=1))[0]
    middle_at = oldest.offset + 50_000
    middle = (await read_blocked(config, offset=middle_at, limit=1))[0]
    newest = (await tail_blocked(config, BlockedFilter(), limit=1))[0]
    store = open_store(config)
    results: dict[str, Any] = {}
    try:
        for name, entry in (("oldest", oldest), ("middle", middle), ("newest", newest)):
            trace = entry.record["trace_id"]
            runs: dict[str, list[tuple[float, int]]] = {"scan": [], "seek": [], "again": []}
            for _ in range(rounds):
                runs["scan"].append(
                    await _timed(
                        lambda s, t=trace: find_blocked(config, t, offset="first", stats=s)
                    )
                )
                await store._redis.delete(store.keys.blocked_offset(trace))
                runs["seek"].append(
                    await _timed(lambda s, t=trace: find_blocked(config, t, index=store, stats=s))
                )
                runs["again"].append(
                    await _timed(lambda s, t=trace: find_blocked(config, t, index=store, stats=s))
                )
            results[name] = {k: _summary(v) for k, v in runs.items()}
        tails = [await _timed(lambda s: tail_blocked(config, BlockedFilter(), limit=50, stats=s))
                 for _ in range(rounds)]  # fmt: skip
        results["tail 50"] = _summary(tails)
    finally:
        await store.close()
    return results


def _summary(runs: list[tuple[float, int]]) -> dict[str, float]:
    return {"median_s": round(statistics.median(t for t, _ in runs), 3),
            "records_read": statistics.median(n for _, n in runs)}  # fmt: skip


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vhost")
    parser.add_argument("--prefix")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--management-url", default="http://guest:guest@127.0.0.1:15672/")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = BrokerConfig(amqp_url=args.amqp_url, redis_url=args.redis_url,
                        management_url=args.management_url)  # fmt: skip
    if args.vhost:
        config = replace(base, vhost=args.vhost, key_prefix=args.prefix or f"{args.vhost}:")
    else:
        from tests.integration.test_blocked_volume import _build

        config = (await _build(base)).config
    for name, figures in (await measure(config, args.rounds)).items():
        print(f"{name:<8} {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
