"""Commits in doubt: may a redelivered message be routed while its holder may commit it?

A router commits an outcome (publish and ack in one AMQP transaction) on the node its
session is connected to. When that node freezes or is cut off, the commit's frames may
sit in the node's socket buffer while the quorum queue, which declared the node's
consumers down, hands the message to another router, where it arrives as a `retry`.
When the node wakes it still runs what it had received, and the recipient would get the
message twice if the retry had been routed meanwhile.

So a retry is routed only once its holder can commit nothing more:

- **Holder.** Every claim records the session that made it (`<session>@<host:port>`),
  and every session declares an exclusive queue `trust.session.<session>` on its
  connection, its lease: RabbitMQ deletes it when, and only when, the node has closed
  that connection, after which no frame of it can take effect any more.
- **Lease.** A passive declare of another connection's exclusive queue answers 405 while
  it exists and 404 once it is gone. It is asked with nowait, so the node that owns the
  queue is never called (a frozen node answers nothing at all); it is asked on the
  holder's own node when that answers, else on this router's node.
- While the lease is there the retry waits (the router keeps it for `in_doubt_hold_ms`,
  then returns it to its queue); the holder either commits it (its claim is then done,
  and the retry is acked as a copy) or its connection ends (the retry is routed).

The holder itself does not give a commit up early (`commit_timeout_ms`, 30 s): dropping
the channel of a commit whose frames a frozen node holds, or whose commit-ok waits on a
queue leader being re-elected, can let the publish land without the ack, and nothing
can tell afterwards. What remains open (docs/RELIABILITY.md): a node frozen for longer
than the commit deadline (or declared down by its peers) that then runs a buffered
commit in part, and a node that dies in the middle of a commit (AMQP transactions are
not atomic across queues on a failing node): a publish without its ack is a duplicate,
an ack without its publish a loss. A retry first claimed
longer than `in_doubt_max_ms` ago is routed whatever its holder's state, so a node that
never comes back holds nothing for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from aio_pika.abc import AbstractConnection
from yarl import URL

from broker.amqp.errors import (
    AMQP_ERRORS,
    CONNECT_ERRORS,
    ChannelLockedResource,
    ChannelNotFoundEntity,
)
from broker.amqp.failover import connect_any
from broker.errors import TrustBrokerError

log = logging.getLogger("broker.amqp.indoubt")
_PROBE_S = 2.0
# Probes of one holder are shared by every retry waiting on it within this time.
_REUSE_S = 0.5
_HOLDERS = 1_000


class Verdict(StrEnum):
    """What to do with a retry whose claim another session holds."""

    ROUTE = "route"  # the holder can commit nothing more: route it
    WAIT = "wait"  # the holder may still commit: keep the message back


class Lease(StrEnum):
    """What a node says about a session's exclusive queue."""

    THERE = "there"
    GONE = "gone"
    UNKNOWN = "unknown"  # no answer in time


class HeldBack(TrustBrokerError):
    """A retry waited for its holder as long as it may; it goes back to its queue."""


def holder_token(session: str, connection: AbstractConnection) -> str:
    """`<session>@<host:port>`: the session and the node it is connected to."""
    url = URL(str(getattr(connection, "url", "")))  # aio_pika.Connection's; not in the ABC
    return f"{session}@{url.host}:{url.port}"


@dataclass
class _View:
    """The last word on one holder's lease, shared by the retries waiting on it."""

    lease: Lease = Lease.UNKNOWN
    at: float = -1.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class InDoubt:
    """Settles retries held by other sessions by asking after their leases."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        session_prefix: str,
        own_connection: Callable[[], AbstractConnection | None],
    ) -> None:
        self._urls = list(urls)
        self._session_prefix = session_prefix
        self._own = own_connection
        self._views: OrderedDict[str, _View] = OrderedDict()
        self.verdicts: dict[str, int] = {verdict.value: 0 for verdict in Verdict}

    async def settle(self, holder: str) -> Verdict:
        """The verdict on a retry held by `holder`."""
        view = self._views.get(holder)
        if view is None:
            view = self._views[holder] = _View()
            if len(self._views) > _HOLDERS:
                self._views.popitem(last=False)
        self._views.move_to_end(holder)
        async with view.lock:
            loop = asyncio.get_running_loop()
            if loop.time() - view.at > _REUSE_S:
                view.lease = await self._lease(holder)
                view.at = loop.time()
        verdict = Verdict.ROUTE if view.lease is Lease.GONE else Verdict.WAIT
        self.verdicts[verdict.value] += 1
        if verdict is Verdict.ROUTE:
            log.info("the holder %s of a retry is gone: routing it", holder)
        return verdict

    async def _lease(self, holder: str) -> Lease:
        session, _, node = holder.partition("@")
        name = self._session_prefix + session
        url = self._url_of(node)
        if url is not None:
            lease = await self._ask_node(url, name)
            if lease is not Lease.UNKNOWN:
                return lease
        own = self._own()
        return Lease.UNKNOWN if own is None else await _ask(own, name)

    def _url_of(self, node: str) -> str | None:
        for url in self._urls:
            parsed = URL(url)
            if f"{parsed.host}:{parsed.port}" == node:
                return url
        return None

    async def _ask_node(self, url: str, name: str) -> Lease:
        try:
            connection = await connect_any([url], timeout=_PROBE_S)
        except CONNECT_ERRORS:
            return Lease.UNKNOWN
        try:
            return await _ask(connection, name)
        finally:
            with contextlib.suppress(*AMQP_ERRORS):
                await asyncio.wait_for(connection.close(), _PROBE_S)


async def _ask(connection: AbstractConnection, name: str) -> Lease:
    """Is the exclusive queue `name` there? Asked with nowait, so the queue's own node is
    never called; the next round trip on the channel carries the verdict: the channel is
    closed with 405 (there) or 404 (gone)."""
    try:
        channel = await asyncio.wait_for(connection.channel(publisher_confirms=False), _PROBE_S)
    except AMQP_ERRORS:
        return Lease.UNKNOWN
    try:
        underlay = await channel.get_underlay_channel()
        await underlay.queue_declare(name, passive=True, nowait=True)
        await asyncio.wait_for(underlay.basic_qos(prefetch_count=1), _PROBE_S)
        return Lease.THERE  # declared on this very connection
    except ChannelLockedResource:
        return Lease.THERE
    except ChannelNotFoundEntity:
        return Lease.GONE
    except AMQP_ERRORS:
        return Lease.UNKNOWN
    finally:
        with contextlib.suppress(*AMQP_ERRORS):
            await asyncio.wait_for(channel.close(), _PROBE_S)
