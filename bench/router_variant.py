"""Run the router with prototype optimisations patched in, to measure them before anyone
changes broker/. The unpatched router is `python -m broker router`; this program exists
only so the benchmarks can compare the two in the same run.

    python bench/router_variant.py --uvloop -- --log-level WARNING router
    python bench/router_variant.py --patch redis-pool --patch keep-peer-cache -- router

Every patch is a small, self-contained change to one method, described where it is
defined; docs/PERFORMANCE.md gives the before/after each one measured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import aiormq
import redis.asyncio as aioredis

from broker import cli
from broker.envelope import Envelope
from broker.store.redis import RedisStore

REDIS_POOL_SIZE = 64


def _keep_peer_cache() -> None:
    """finish() drops the sender's cached PeerState after every message (its clean streak
    moved in Redis), so the next message from that sender pays an HGETALL. Keep the
    cached copy with the streak bumped, as Redis now has it, unless finish() reported an
    anomaly (then it invalidates, as before). Other routers see the new streak when their
    entry expires, exactly as today."""
    original = RedisStore.finish

    async def finish(self: RedisStore, env: Envelope, digest: str, result: Any, *args: Any) -> Any:
        entries = self._peers._entries
        entry = entries.get(env.sender)
        anomaly = await original(self, env, digest, result, *args)
        if not anomaly and entry is not None:
            expires, peer = entry
            streak = peer.clean_streak + 1 if result.clean else peer.clean_streak
            entries[env.sender] = (expires, replace(peer, clean_streak=streak))
        return anomaly

    RedisStore.finish = finish  # type: ignore[method-assign]


def _no_drain_wait() -> None:
    """aiormq's basic_publish and basic_ack wait, by default, until the writer task has
    written the frame to the socket, and basic_publish holds the channel lock meanwhile.
    The committer publishes and acks a batch one item at a time, so a batch of 128 costs
    256 trips through a busy event loop before its tx.commit is even sent. Inside a
    transaction nothing needs that wait: frames go out in order, and commit-ok (which
    the committer still awaits) covers every publish and ack before it. Queue the frames
    without waiting (wait=False) on channels without publisher confirms."""
    publish = aiormq.Channel.basic_publish
    ack = aiormq.Channel.basic_ack

    async def basic_publish(self: aiormq.Channel, *args: Any, **kwargs: Any) -> Any:
        if not self.publisher_confirms:
            kwargs["wait"] = False
        return await publish(self, *args, **kwargs)

    async def basic_ack(
        self: aiormq.Channel, delivery_tag: int, multiple: bool = False, wait: bool = True
    ) -> None:
        await ack(self, delivery_tag, multiple, wait=self.publisher_confirms and wait)

    aiormq.Channel.basic_publish = basic_publish  # type: ignore[method-assign]
    aiormq.Channel.basic_ack = basic_ack  # type: ignore[method-assign]


def _redis_pool() -> None:
    """redis-py 8 caps an asyncio connection pool at 100 and raises MaxConnectionsError
    past that (5.x allowed 2**31). The router decides up to `prefetch` (128) messages at
    once, each holding a connection while it waits on Redis: past 100 a call fails, the
    store reports itself unavailable, and the router pauses and requeues (fail closed),
    many times a second under load. A BlockingConnectionPool makes a caller wait for a
    free connection instead of failing."""
    original = aioredis.Redis.from_url

    def from_url(url: str, **kwargs: Any) -> aioredis.Redis:
        if "connection_pool" in kwargs:
            return original(url, **kwargs)
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_POOL_SIZE, timeout=kwargs.get("socket_timeout"), **kwargs
        )
        return aioredis.Redis(connection_pool=pool)

    aioredis.Redis.from_url = from_url  # type: ignore[method-assign,assignment]


PATCHES: dict[str, Callable[[], None]] = {
    "redis-pool": _redis_pool,
    "no-drain-wait": _no_drain_wait,
    "keep-peer-cache": _keep_peer_cache,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Apply the chosen patches, then run the CLI with the arguments after `--`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--patch", action="append", default=[], choices=sorted(PATCHES))
    args = parser.parse_args(argv[:split])
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    for name in args.patch:
        PATCHES[name]()
    return cli.main(argv[split + 1 :])


if __name__ == "__main__":
    sys.exit(main())
