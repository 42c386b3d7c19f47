"""A TCP proxy on loopback that can freeze its connections: the network partition a test
can switch on and off without root, network namespaces or touching the servers.

Frozen, the proxy keeps every socket open but forwards nothing and propagates no close,
which is what a client sees of a node behind a partition or frozen solid: its writes are
accepted by the kernel and nothing ever answers. New connections made while frozen are
served normally (the "other side of the partition" stays reachable) unless
`refuse_new` is set.
"""

from __future__ import annotations

import asyncio
import contextlib


class FreezingProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<target>; freeze() stalls what is open."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._frozen: set[int] = set()
        self._generation = 0
        self.refuse_new = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> FreezingProxy:
        """Listen on a free loopback port (self.port)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def freeze(self) -> None:
        """Stop forwarding on every connection open now (they stay open, silent)."""
        self._frozen.add(self._generation)
        self._generation += 1

    def thaw(self) -> None:
        """Forward again on every connection."""
        self._frozen.clear()

    def cut(self) -> None:
        """Reset every connection open now, frozen or not, as a node that died would (the
        client reads a reset at once); connections made after it are forwarded."""
        self._generation += 1
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse_new:
            writer.transport.abort()
            return
        generation = self._generation
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, generation))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, generation: int
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await source.read(65536)
                while generation in self._frozen:
                    await asyncio.sleep(0.05)  # swallow nothing: hold it until thawed
                if not data:
                    break
                sink.write(data)
                await sink.drain()
        while generation in self._frozen:
            await asyncio.sleep(0.05)  # a frozen link propagates no close either
        sink.transport.abort()
