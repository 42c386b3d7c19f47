"""Connecting to Redis: a plain server or the master a Sentinel group watches, with a
deadline on every wait."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from broker.errors import ConfigError

# Every wait on Redis has a deadline: a connection, a reply, a free pooled connection.
_POOL = {"max_connections": 64, "timeout": 5, "socket_timeout": 2.0,
         "socket_connect_timeout": 2.0, "retry_on_timeout": False}  # fmt: skip


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (it asks the Sentinels where the master is, and again after a
    failover) that waits for a free connection like the plain blocking pool below."""


def connect_redis(url: str) -> tuple[aioredis.Redis, list[aioredis.Redis]]:
    """A client (and the Sentinel clients it asks, to close with it) for
    redis://[:password@]host:port/db, or for the master a Sentinel group watches:
    redis+sentinel://[:password@]host:port[,host:port...]/service[/db]. The password
    authenticates to the Sentinels and to the master alike."""
    if not url.startswith("redis+sentinel://"):
        # A blocking pool: with `prefetch` decisions in flight, a plain pool runs out of
        # connections and raises, which would read as "Redis down" and pause the router.
        # Here a caller waits for a free connection instead (bench/ found ~100 false
        # pauses per 5,000 messages before this).
        pool = aioredis.BlockingConnectionPool.from_url(url, **_POOL)
        return aioredis.Redis.from_pool(pool), []  # owns the pool: aclose() closes it
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    password = unquote(parts.password) if parts.password else None
    service, _, db = parts.path.strip("/").partition("/")
    if not service:
        raise ConfigError(f"{url.split('@')[-1]}: name the Sentinel service, e.g. /trustbroker/0")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        sentinels.append((name or "127.0.0.1", int(port or 26379)))
    timeouts = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels, sentinel_kwargs={"password": password, **timeouts}, password=password,
        db=int(db or 0), **timeouts,
    )  # fmt: skip
    pool_options = {k: v for k, v in _POOL.items() if k in ("max_connections", "timeout")}
    master: aioredis.Redis = sentinel.master_for(
        service, redis_class=aioredis.Redis, connection_pool_class=_BlockingSentinelPool,
        retry_on_timeout=False, **pool_options,
    )  # fmt: skip
    return master, list(sentinel.sentinels)
