"""Reading a RabbitMQ stream over AMQP 0.9.1 by offset and by time, without consuming it.

A stream refuses basic.nack and basic.reject, so nothing here ever returns a message:
a read attaches a consumer on a channel of its own, acks what it reads (acking a stream
delivery only grants more credit, it removes nothing) and closes that channel when done,
which drops whatever was prefetched. aio-pika's queue iterator nacks its prefetched
messages on close, which a stream answers by closing the channel; it is not used here.

A read stops at an offset (`until`), after `limit` messages, or after `idle_timeout`
seconds without a message, which is the only way AMQP 0.9.1 tells a reader it has reached
the end of a stream. Callers that know where to stop never wait for that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from broker.amqp.errors import AMQP_ERRORS
from broker.amqp.failover import connect_any

# Offsets the stream understands by name; anything else is a number or a time.
NAMED_OFFSETS = ("first", "last", "next")
Offset = int | str | datetime
# Prefetch of a reader: deep enough to keep the stream busy, and small enough that a
# read which stops early leaves little prefetched for nothing.
PREFETCH = 1000
# How long a read waits for the first message after attaching, and for the next one
# while it is still short of an offset the stream is known to reach: on a loaded host a
# pause there is the broker being slow, not the end of the stream.
ATTACH_WAIT_S = 5.0
STALL_WAIT_S = 30.0


@dataclass
class ReadStats:
    """How much a reader read: consumers attached and messages delivered to them."""

    attaches: int = 0
    messages: int = 0


@dataclass(frozen=True)
class StreamMessage:
    """One message of a stream: its offset, id, headers and body."""

    offset: int
    message_id: str | None
    headers: dict[str, Any]
    body: bytes


def _message(message: AbstractIncomingMessage) -> StreamMessage:
    headers = dict(message.headers or {})
    offset = headers.get("x-stream-offset", -1)
    return StreamMessage(
        offset=offset if isinstance(offset, int) else -1,
        message_id=message.message_id,
        headers=headers,
        body=message.body,
    )


class StreamReader:
    """Reads one stream; every `read` attaches anew (async context manager)."""

    def __init__(
        self,
        amqp_urls: Sequence[str],
        stream: str,
        *,
        prefetch: int = PREFETCH,
        stats: ReadStats | None = None,
    ) -> None:
        self._urls = list(amqp_urls)  # the cluster's nodes: the first that answers serves
        self._stream = stream
        self._prefetch = max(1, prefetch)
        self._connection: AbstractConnection | None = None
        self.stats = stats or ReadStats()
        # True when the last read ended at its deadline rather than at its end.
        self.stopped_by_deadline = False

    async def __aenter__(self) -> StreamReader:
        self._connection = await connect_any(self._urls)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            with contextlib.suppress(*AMQP_ERRORS):
                await self._connection.close()
            self._connection = None

    async def read(
        self,
        offset: Offset,
        *,
        until: int | None = None,
        limit: int | None = None,
        idle_timeout: float | None = 1.0,
        deadline_s: float | None = None,
        reaches: int | None = None,
    ) -> AsyncGenerator[StreamMessage, None]:
        """Messages from `offset` (a name, a number or a datetime) in stream order; stops
        once offset `until` is reached, after `limit` messages, after `idle_timeout`
        seconds without one (never, when it is None) or after `deadline_s` seconds. Until
        offset `reaches` (one the stream is known to have) a pause is waited out."""
        assert self._connection is not None, "use StreamReader as an async context manager"
        channel = await self._connection.channel()
        try:
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await channel.get_queue(self._stream, ensure=False)
            inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            await queue.consume(inbox.put, arguments={"x-stream-offset": offset})
            self.stats.attaches += 1
            loop = asyncio.get_running_loop()
            deadline = None if deadline_s is None else loop.time() + deadline_s
            waits = _Waits(idle_timeout, reaches, deadline)
            async for message in self._drain(inbox, until, limit, waits):
                yield message
        finally:
            # Closing the channel ends the consumer and drops what it prefetched.
            with contextlib.suppress(*AMQP_ERRORS):
                await channel.close()

    async def _drain(
        self,
        inbox: asyncio.Queue[AbstractIncomingMessage],
        until: int | None,
        limit: int | None,
        waits: _Waits,
    ) -> AsyncGenerator[StreamMessage, None]:
        ack_every = max(1, self._prefetch // 4)
        unacked = count = 0
        self.stopped_by_deadline = False
        newest = -1
        while limit is None or count < limit:
            wait = waits.next(newest, count == 0)
            if wait is not None and wait <= 0:
                self.stopped_by_deadline = True
                return
            try:
                delivery = await asyncio.wait_for(inbox.get(), wait)
            except TimeoutError:
                self.stopped_by_deadline = waits.past_deadline()
                return
            unacked += 1
            if unacked >= ack_every:
                await delivery.ack(multiple=True)  # credit for the next batch
                unacked = 0
            message = _message(delivery)
            newest = message.offset
            count += 1
            self.stats.messages += 1
            yield message
            if until is not None and message.offset >= until:
                return

    async def first_offset(self, at: Offset, idle_timeout: float = 2.0) -> int | None:
        """The offset of the first message a reader attached at `at` gets; None when
        there is none (an empty stream, or a time after the last message)."""
        async with contextlib.aclosing(
            self.read(at, limit=1, idle_timeout=idle_timeout)
        ) as messages:
            async for message in messages:
                return message.offset
        return None


@dataclass
class _Waits:
    """How long a read waits for its next message."""

    idle: float | None
    reaches: int | None
    deadline: float | None

    def next(self, newest: int, first: bool) -> float | None:
        """Seconds to wait now (None: forever; 0 or less: the deadline has passed)."""
        wait = self.idle
        if wait is not None and self.reaches is not None and newest < self.reaches:
            wait = max(wait, ATTACH_WAIT_S if first else STALL_WAIT_S)
        if self.deadline is not None:
            left = self.deadline - asyncio.get_running_loop().time()
            wait = left if wait is None else min(wait, left)
        return wait

    def past_deadline(self) -> bool:
        """True once the deadline (if any) has passed."""
        return self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline
