"""How the SDK paces its publishes: a window of unconfirmed publishes that shrinks when the
broker pushes back, and a confirm lost with its connection told apart from a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from broker.errors import BrokerUnavailable


class Window:
    """How many publishes may await their confirm at once: `most` while the broker takes
    them; each nack halves it, each confirm widens it by one (additive increase,
    multiplicative decrease, as TCP does). A client whose lane is full then retries a few
    publishes at a time instead of all of them, which would only load RabbitMQ."""

    def __init__(self, most: int) -> None:
        self.size = self.most = most
        self._busy = 0
        self._free = asyncio.Condition()

    async def acquire(self, timeout: float) -> None:
        async with self._free:
            await asyncio.wait_for(
                self._free.wait_for(lambda: self._busy < self.size), max(timeout, 0.01)
            )
            self._busy += 1

    async def release(self, confirmed: bool | None) -> None:
        """`confirmed`: True for a confirm, False for a nack, None for anything else."""
        async with self._free:
            self._busy -= 1
            if confirmed is True:
                self.size = min(self.most, self.size + 1)
            elif confirmed is False:
                self.size = max(1, self.size // 2)
            self._free.notify(max(0, self.size - self._busy))


class ConnectionLost(BrokerUnavailable, ConnectionError):
    """The connection closed under a pending publish (aiormq cancels its confirm)."""


async def uncancelled(operation: Awaitable[None]) -> None:
    """Run `operation`; a CancelledError it raises while nobody cancelled us is aiormq
    telling a pending confirm that its connection closed: a ConnectionError like any."""
    try:
        await operation
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise ConnectionLost("the connection closed before the broker confirmed") from None
