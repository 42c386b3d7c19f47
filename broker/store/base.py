"""What every aggregate of the Redis store shares: the client, the shared pipelines, the
Lua scripts, the local caches and their invalidation over pub/sub.

Redis errors never leave the store: they become StoreUnavailable, on which the router
stops taking messages until the store answers again (fail closed, lose nothing).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from broker.core.state import PactTerms, PeerState, RecipientProfile, TrustList
from broker.errors import ExceptionMapping, StoreUnavailable, map_exceptions
from broker.store.batch import AutoPipeline, Command
from broker.store.cache import TTLCache
from broker.store.connection import connect_redis
from broker.store.federation import FederationStore
from broker.store.keys import Keys
from broker.store.lua import lua_script
from broker.store.serious import SeriousQueue

T = TypeVar("T")


def _unavailable(exc: Exception) -> Exception:
    return StoreUnavailable(f"Redis unavailable: {type(exc).__name__}")


# What a Redis call raises when Redis cannot be used: its own errors and the sockets under
# it. As StoreUnavailable they never leave the store.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)
TO_STORE_UNAVAILABLE: ExceptionMapping = {kind: _unavailable for kind in REDIS_ERRORS}
_BOUNDARY = map_exceptions(TO_STORE_UNAVAILABLE)


@dataclass(frozen=True)
class Globals:
    """Deployment-wide sets every decision reads; cached like peers."""

    issuers: TrustList
    revoked_evidence: frozenset[str]


def text(raw: Any) -> str:
    """A Redis reply as text (bytes decoded, anything else as str)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def as_bytes(fields: dict[Any, Any]) -> dict[bytes, bytes]:
    """A hash reply as it is: the client is created without decode_responses, so keys and
    values are bytes."""
    return fields


class StoreBase:
    """The connection, caches and invalidation that RedisStore's aggregates share."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        *,
        cache_size: int = 100_000,
        cache_ttl_ms: int = 2_000,
        dedup_ttl_ms: int = 3_600_000,
        trace_ttl_ms: int = 86_400_000,
        decision_log_max: int = 100_000,
    ) -> None:
        self._redis, self._sentinels = connect_redis(url)
        self._replicated = url.startswith("redis+sentinel://")
        self.keys = keys
        self._dedup_ttl_ms = dedup_ttl_ms
        self._trace_ttl_ms = trace_ttl_ms
        self._decision_log_max = decision_log_max
        self._peers: TTLCache[str, PeerState] = TTLCache(cache_size, cache_ttl_ms)
        self._recipients: TTLCache[str, RecipientProfile | None] = TTLCache(
            cache_size, cache_ttl_ms
        )
        self._globals: TTLCache[str, Globals] = TTLCache(1, cache_ttl_ms)
        # Most sender/recipient pairs have no pact: cache that too (False), not only hits.
        self._pacts: TTLCache[tuple[str, str], PactTerms | bool] = TTLCache(
            cache_size, cache_ttl_ms
        )
        # The per-message commands (claim, peer reads, finish, decision records) of
        # concurrent decisions share pipelines: one round trip per batch, not per command.
        self._auto = AutoPipeline(self._redis)
        self._scripts: dict[tuple[str, ...], AsyncScript] = {}
        self.serious = SeriousQueue(self._redis, keys, self._call)
        self.federation = FederationStore(self._redis, keys, self._call)

    async def close(self) -> None:
        """Close the connection pool (and the Sentinel clients, if any)."""
        await self._redis.aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()

    async def _call(self, operation: Awaitable[T]) -> T:
        with _BOUNDARY:
            return await operation

    async def _together(self, *commands: Command) -> list[Any]:
        """Several commands in the next shared pipeline; their replies in order."""
        return await self._call(self._auto.run_all(commands))

    def _lua(self, *names: str) -> AsyncScript:
        """The script of lua/<name>.lua (see lua_script), registered on first use."""
        script = self._scripts.get(names)
        if script is None:
            script = self._scripts[names] = self._redis.register_script(lua_script(*names))
        return script

    async def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(await self._redis.ping())
        except REDIS_ERRORS:
            return False

    @property
    def cache_stats(self) -> tuple[int, int]:
        """(hits, misses) of the peer cache."""
        return self._peers.hits, self._peers.misses

    async def _set_peer(self, did: str, fields: dict[str, str | bytes]) -> None:
        await self._call(self._redis.hset(self.keys.peer(did), mapping=dict[Any, Any](fields)))
        await self.invalidate(f"peer:{did}")

    async def purge(self) -> int:
        """Delete every key under this store's prefix (demo resets and tests only)."""
        deleted, batch = 0, []
        async for key in self._redis.scan_iter(match=self.keys.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(await self._call(self._redis.unlink(*batch)))
                batch = []
        if batch:
            deleted += int(await self._call(self._redis.unlink(*batch)))
        await self.invalidate("all")
        return deleted

    # -- invalidation -------------------------------------------------------------------

    async def invalidate(self, what: str) -> None:
        """Drop `what` here and publish it so every router drops it within a second."""
        self._drop(what)
        await self._call(self._redis.publish(self.keys.invalidate, what))

    def _drop(self, what: str) -> None:
        kind, _, did = what.partition(":")
        if kind == "peer":
            self._peers.discard(did)
        elif kind == "recipient":
            self._recipients.discard(did)
        elif kind == "globals":
            self._globals.clear()
        elif kind == "pact":
            sender, _, recipient = did.partition("|")
            self._pacts.discard((sender, recipient))
        elif kind == "all":
            self._pacts.clear()
            self._peers.clear()
            self._recipients.clear()
            self._globals.clear()

    async def invalidations(self) -> AsyncIterator[str]:
        """Apply invalidations from other routers as they arrive; yields each one."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await self._call(pubsub.subscribe(self.keys.invalidate))
            # Entries cached before the subscription may have missed an invalidation.
            self._drop("all")
            yield "all"
            while True:
                message = await self._call(pubsub.get_message(timeout=1.0))
                if message is None:
                    continue
                what = bytes(message["data"]).decode()
                self._drop(what)
                yield what
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
