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

from broker.grouping import GroupQueue

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


class AutoPipeline:
    """Coalesces the commands of concurrent callers into pipelines, one in flight at a
    time, at most `max_batch` commands each. Errors come back to each caller as the
    exception Redis (or the connection) raised."""

    def __init__(self, redis: aioredis.Redis, *, max_batch: int = 512) -> None:
        self._redis = redis
        self._groups: GroupQueue[Command] = GroupQueue(self._send, max_group=max_batch)
        self.batches = 0
        self.commands = 0

    async def run(self, command: Command) -> Any:
        """Send `command` in the next pipeline and return its reply."""
        return await self._groups.submit(command)

    async def run_all(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands in the next pipeline; their replies in order. Raises the first
        error among them (after every reply is in, so none goes unretrieved)."""
        replies = await asyncio.gather(*map(self.run, commands), return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    async def _send(self, batch: list[Command]) -> list[Any]:
        replies = await self._execute(batch)
        self.batches += 1
        self.commands += len(batch)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            for script in {id(s): s for i in missing if (s := batch[i].script)}.values():
                script.sha = await self._redis.script_load(script.script)
            retried = await self._execute([batch[i] for i in missing])
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
        return replies

    async def _execute(self, commands: list[Command]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                if command.script is not None:
                    pipe.execute_command("EVALSHA", command.script.sha, *command.args)
                else:
                    pipe.execute_command(*command.args)
            return list(await pipe.execute(raise_on_error=False))
