"""Group sending: calls that arrive while one group is in flight go out together in the
next. The AMQP committer (one transaction per group) and the Redis auto-pipeline (one
round trip per group) both work this way; this is the queue and flush loop they share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
# Sends one group; returns one result per item, in order. A result that is an Exception
# is raised to that item's caller only; an exception raised by the call fails the group.
SendGroup = Callable[[list[T]], Awaitable[Sequence[Any]]]


class GroupQueue(Generic[T]):
    """One group in flight at a time, at most `max_group` items each (0: no limit)."""

    def __init__(self, send: SendGroup[T], *, max_group: int = 0) -> None:
        self._send = send
        self._max_group = max_group
        self._queue: list[tuple[T, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> Any:
        """Send `item` with the next group and return its result."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._queue:
            size = self._max_group or len(self._queue)
            group = self._queue[:size]
            del self._queue[:size]
            try:
                results = await self._send([item for item, _ in group])
            except BaseException as exc:
                error = exc if isinstance(exc, Exception) else RuntimeError("cancelled")
                for _, done in group:
                    if not done.done():
                        done.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, done), result in zip(group, results, strict=True):
                if done.done():  # the caller was cancelled meanwhile
                    continue
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(result)
