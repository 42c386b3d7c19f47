"""The router's watchdog: notices that its own process stood still.

A process stopped with SIGSTOP, a frozen VM or an event loop blocked for long may keep
its AMQP connection (RabbitMQ 3.10 did not close one paused for 132 s), and another
router may have taken over its messages meanwhile. Whatever it decided before the pause
may be stale, so after a pause it commits none of it: the committer asks `awake()`
before every commit, and the router drops its session when `run` reports a stall.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

TICK_S = 0.5


class Watchdog:
    """Ticks every `tick_s`; a tick later than `stall_ms` (plus a tick) is a stall."""

    def __init__(self, stall_ms: int, tick_s: float = TICK_S) -> None:
        self._stall_s = stall_ms / 1000
        self._tick_s = tick_s
        self._last_tick: float | None = None

    def awake(self) -> bool:
        """False when the watchdog has not run for longer than stall_ms (a pause)."""
        if self._last_tick is None:
            return True
        late = asyncio.get_running_loop().time() - self._last_tick
        return late <= self._stall_s + self._tick_s

    async def run(self, stopping: asyncio.Event, on_stall: Callable[[float], None]) -> None:
        """Tick until `stopping` is set; call `on_stall` with the seconds stood still."""
        loop = asyncio.get_running_loop()
        last = self._last_tick = loop.time()
        while not stopping.is_set():
            await asyncio.sleep(self._tick_s)
            now = self._last_tick = loop.time()
            if now - last > self._stall_s + self._tick_s:
                on_stall(now - last)
            last = now
