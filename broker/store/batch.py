"""Automatic pipelining: the Redis commands of concurrent decisions share round trips.

The router decides up to `prefetch` messages at once and each needs Redis twice (claim,
finish). Sent one by one, every command pays its own round trip, its own pool checkout and
its own socket write. Here a command joins a queue; while one pipeline is on the wire the
queue fills, and the next pipeline carries everything that arrived meanwhile. An idle
router still pays exactly one round trip per command; a busy one pays one per batch.

Each command is atomic on its own (a Lua script or a plain command) and nothing here is a
transaction: commands of different messages only share the trip. A script Redis has
forgotten (a restart, SCRIPT FLUSH) is loaded again and its commands sent once more: a
NOSCRIPT reply means the script did not run. redis-py's own pipelines would instead ask
SCRIPT EXISTS on every execute, a second round trip per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

EncodableArg = bytes | str | int | float


@dataclass(frozen=True, slots=True)
class Command:
    """One Redis command: a script (by its SHA, loaded on demand) or a plain command."""

    args: tuple[EncodableArg, ...]
    script: AsyncScript | None = None

    @classmethod
    def eval(
        cls, script: AsyncScript, keys: Sequence[str], args: Sequence[EncodableArg]
    ) -> Command:
        """Run `script` with these keys and arguments."""
        return cls((len(keys), *keys, *args), script)

    @classmethod
    def plain(cls, *args: EncodableArg) -> Command:
        """A command as Redis spells it, e.g. Command.plain('HGETALL', key)."""
        return cls(args)


@dataclass(slots=True)
class _Queued:
    command: Command
    done: asyncio.Future[Any]


class AutoPipeline:
    """Coalesces the commands of concurrent callers into pipelines, one in flight at a
    time, at most `max_batch` commands each. Errors come back to each caller as the
    exception Redis (or the connection) raised."""

    def __init__(self, redis: aioredis.Redis, *, max_batch: int = 512) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        self.commands = 0

    async def run(self, command: Command) -> Any:
        """Send `command` in the next pipeline and return its reply."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(command, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                await self._send(batch)
            except BaseException as exc:
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError("cancelled")
                        )
                if not isinstance(exc, Exception):
                    raise

    async def _send(self, batch: list[_Queued]) -> None:
        replies = await self._execute([item.command for item in batch])
        self.batches += 1
        self.commands += len(batch)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            for script in {id(s): s for i in missing if (s := batch[i].command.script)}.values():
                script.sha = await self._redis.script_load(script.script)
            retried = await self._execute([batch[i].command for i in missing])
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
        for item, reply in zip(batch, replies, strict=True):
            if item.done.done():  # the caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                item.done.set_exception(reply)
            else:
                item.done.set_result(reply)

    async def _execute(self, commands: list[Command]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                if command.script is not None:
                    pipe.execute_command("EVALSHA", command.script.sha, *command.args)
                else:
                    pipe.execute_command(*command.args)
            return list(await pipe.execute(raise_on_error=False))
