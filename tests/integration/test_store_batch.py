"""Automatic pipelining against the real Redis: shared round trips, per-caller results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from broker.config import BrokerConfig
from broker.store.batch import AutoPipeline, Command

_INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
async def client(config: BrokerConfig) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(config.redis_url)
    yield client
    await client.aclose()


async def test_concurrent_commands_share_round_trips_and_each_gets_its_own_reply(
    client: aioredis.Redis, config: BrokerConfig
) -> None:
    auto = AutoPipeline(client)
    script = client.register_script(_INCR_BY)
    key = f"{config.key_prefix}counter"
    replies = await asyncio.gather(
        *(auto.run(Command.eval(script, [key], [n])) for n in range(1, 101))
    )
    assert len(set(replies)) == 100  # running totals of positive steps: all distinct
    stored = await client.get(key)
    assert stored is not None
    assert max(replies) == sum(range(1, 101)) == int(stored)
    # Each reply is the running total just after that caller's own increment.
    assert all(r >= n for r, n in zip(replies, range(1, 101), strict=True))
    assert auto.commands == 100
    assert auto.batches < 10  # one trip for the first, then the rest together


async def test_a_forgotten_script_is_loaded_again_and_runs_once(
    client: aioredis.Redis, config: BrokerConfig
) -> None:
    auto = AutoPipeline(client)
    script = client.register_script(_INCR_BY)
    key = f"{config.key_prefix}flushed"
    await client.script_flush()
    replies = await asyncio.gather(*(auto.run(Command.eval(script, [key], [1])) for _ in range(5)))
    assert sorted(replies) == [1, 2, 3, 4, 5]  # NOSCRIPT means not run: no double counting
    assert await client.get(key) == b"5"


async def test_an_error_reaches_only_the_caller_whose_command_failed(
    client: aioredis.Redis, config: BrokerConfig
) -> None:
    auto = AutoPipeline(client)
    text, hashed = f"{config.key_prefix}text", f"{config.key_prefix}hash"
    await client.set(text, "not a hash")
    await client.hset(hashed, "field", "value")
    results = await asyncio.gather(
        auto.run(Command.plain("HGETALL", text)),
        auto.run(Command.plain("HGETALL", hashed)),
        return_exceptions=True,
    )
    wrong, right = results
    assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)
    assert right == {b"field": b"value"}


async def test_a_dead_connection_fails_every_waiting_caller() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    auto = AutoPipeline(dead)
    try:
        results = await asyncio.gather(
            *(auto.run(Command.plain("GET", f"k{i}")) for i in range(3)), return_exceptions=True
        )
    finally:
        await dead.aclose()
    assert all(isinstance(r, (RedisConnectionError, OSError)) for r in results), results
