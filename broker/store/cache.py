"""A bounded LRU cache whose entries also expire; pure, with the clock passed in."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """At most `max_size` entries, each valid for `ttl_ms` after it was stored."""

    def __init__(self, max_size: int, ttl_ms: int) -> None:
        if max_size < 1 or ttl_ms < 0:
            raise ValueError("cache needs max_size >= 1 and ttl_ms >= 0")
        self._max_size = max_size
        self._ttl_ms = ttl_ms
        self._entries: OrderedDict[K, tuple[int, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K, now_ms: int) -> V | None:
        """The cached value, or None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now_ms:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: K, value: V, now_ms: int) -> None:
        """Store `value`, evicting the least recently used entry when full."""
        self._entries[key] = (now_ms + self._ttl_ms, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def update(self, key: K, change: Callable[[V], V]) -> None:
        """Replace a present entry's value with `change(value)`, keeping its expiry."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (entry[0], change(entry[1]))

    def discard(self, key: K) -> None:
        """Forget one entry."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
