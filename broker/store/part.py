"""What every part of the store that owns its own keys and scripts shares: the client,
the key names and the store's error-mapping call (the caller maps Redis errors)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from broker.store.keys import Keys

Call = Callable[[Awaitable[Any]], Awaitable[Any]]


class StorePart:
    """A part of RedisStore (the review queue of serious reports, federation records)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, call: Call) -> None:
        self._redis = client
        self._keys = keys
        self._call = call
