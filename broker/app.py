"""Router process lifecycle: connect, run until SIGINT/SIGTERM, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from broker.config import BrokerConfig
from broker.core.identity import AgentKey
from broker.errors import ConfigError
from broker.ops.sweeper import run_sweeper
from broker.router import Router
from broker.sdk.keyfile import load_key, save_key
from broker.store.keys import Keys
from broker.store.redis import RedisStore, wait_until_available

log = logging.getLogger("broker.app")


def open_store(config: BrokerConfig) -> RedisStore:
    """The Redis store for `config`."""
    return RedisStore(
        config.redis_url,
        Keys(config.key_prefix),
        cache_size=config.cache_size,
        cache_ttl_ms=config.cache_ttl_ms,
        dedup_ttl_ms=config.dedup_ttl_ms,
        trace_ttl_ms=config.trace_ttl_ms,
    )


def load_or_create_broker_key(config: BrokerConfig) -> AgentKey:
    """The broker's signing key; every router of a deployment must share the same file."""
    path = Path(config.broker_key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_key(path, AgentKey.generate())
            log.info("created broker key %s", path)
        except ConfigError:
            if not path.exists():
                raise
            # another router created it first, whole (save_key never shows a part)
    key = load_key(path)
    log.info("broker DID %s", key.did)
    return key


async def run_router(
    config: BrokerConfig, ready: asyncio.Event | None = None, *, metrics_port_explicit: bool = True
) -> None:
    """Run one router until a termination signal arrives. A metrics port that was asked
    for explicitly must be free; the default one moves on to the next free port."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    store = open_store(config)
    try:
        if not await store.ping():
            log.warning("Redis is not answering yet; the router waits for it (fail closed)")
            if not await wait_until_available(store, config.store_retry_ms, stop):
                return
        key = load_or_create_broker_key(config)
        router = Router(config, store, broker_key=key, sweeper=run_sweeper)
        if config.metrics_port:
            try:
                router.metrics.serve(config.metrics_port, explicit=metrics_port_explicit)
            except ConfigError as exc:
                if metrics_port_explicit:
                    raise  # asked for that port: better no router than one nobody scrapes
                log.warning("%s; this router runs without /metrics", exc)
        await router.start()
        if ready is not None:
            ready.set()
        await stop.wait()
        await router.stop()
    finally:
        await store.close()
