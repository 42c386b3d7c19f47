"""Router sessions: one connection (to whichever cluster node answers) with one consuming
channel in transaction mode, and the session's lease.

A session is replaced whole when anything fails: its connection or channel closes, a
commit misses its deadline, or the watchdog finds the process was paused. Closing it
makes the broker requeue everything delivered on it that was not committed; the next
session starts on the next node that answers. Nothing here waits on RabbitMQ without a
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from broker.amqp.committer import TransactionalCommitter
from broker.amqp.errors import AMQP_ERRORS
from broker.amqp.failover import connect_any, with_heartbeat
from broker.amqp.indoubt import holder_token
from broker.amqp.topology import declare_session_lease, open_router_topology
from broker.config import BrokerConfig, split_urls, with_vhost
from broker.router.negotiation import NegotiationService

log = logging.getLogger("broker.router")


@dataclass
class Session:
    """One connection and its consuming channel; replaced whole when anything fails."""

    connection: AbstractConnection
    channel: AbstractChannel
    queue: AbstractQueue
    committer: TransactionalCommitter
    ended: asyncio.Event
    # '<session>@<host:port>': what this session's claims record as their holder.
    holder: str = ""
    replies: AbstractConnection | None = None
    why: str = ""
    # What this session consumes: queue name -> (queue, consumer tag).
    consumers: dict[str, tuple[AbstractQueue, str]] = field(default_factory=dict)
    # For passive checks of lanes: a missing queue closes the channel it was asked on.
    probe: AbstractChannel | None = None
    # Declaring the lease (broker/amqp/indoubt.py) on a channel of its own.
    lease: asyncio.Task[None] | None = None


def deadline_s(config: BrokerConfig) -> float:
    """How long any one wait on RabbitMQ may take."""
    return config.amqp_timeout_ms / 1000


async def open_session(
    config: BrokerConfig,
    *,
    negotiation: NegotiationService | None,
    awake: Callable[[], bool],
    first: int,
) -> Session:
    """Connect to the first node that answers (trying from node `first` on) and prepare
    the session there: topology checked, negotiation replies started, lease being taken."""
    urls = [with_heartbeat(url, config.heartbeat_s) for url in config.amqp_vhost_urls]
    connection = await connect_any(urls, timeout=deadline_s(config), first=first)
    try:
        return await asyncio.wait_for(
            _prepare(connection, config, negotiation, awake, first), deadline_s(config)
        )
    except BaseException:
        await close_quietly(connection, deadline_s(config))
        raise


async def _prepare(
    connection: AbstractConnection,
    config: BrokerConfig,
    negotiation: NegotiationService | None,
    awake: Callable[[], bool],
    first: int,
) -> Session:
    ended = asyncio.Event()
    holder: list[Session] = []

    def broken(why: str) -> None:
        if holder:
            end(holder[0], why)
        else:
            ended.set()

    def closed(what: str) -> Callable[..., None]:
        return lambda *_: broken(f"its {what} closed")

    connection.close_callbacks.add(closed("connection"))
    # Transactions, not publisher confirms: see broker/amqp/committer.py for why.
    channel = await connection.channel(publisher_confirms=False)
    channel.close_callbacks.add(closed("channel"))
    queue = await open_router_topology(channel, config.topology)
    replies = None
    if negotiation is not None:
        # Replies need the default exchange, which the router's own login may not
        # write to: they go over a second login that can do nothing else.
        replies = await _reply_connection(connection, config, first)
        replies.close_callbacks.add(closed("reply connection"))
        await negotiation.start(replies)
    lease = uuid.uuid4().hex
    token = holder_token(lease, connection)
    committer = TransactionalCommitter(
        channel, timeout_s=config.commit_timeout_ms / 1000, on_broken=broken, awake=awake
    )
    session = Session(connection, channel, queue, committer, ended, token, replies)
    # The session's lease: while its connection lives on its node, a retry of what it
    # claimed waits (broker/amqp/indoubt.py). Declaring a queue writes to every node's
    # Mnesia and so waits for a frozen one; the session does not wait for it.
    session.lease = asyncio.create_task(_take_lease(connection, config, lease))
    holder.append(session)
    return session


async def _take_lease(connection: AbstractConnection, config: BrokerConfig, lease: str) -> None:
    try:
        channel = await asyncio.wait_for(
            connection.channel(publisher_confirms=False), deadline_s(config)
        )
        await declare_session_lease(channel, config.topology, lease)
    except AMQP_ERRORS as exc:
        log.warning("session lease not declared (%s)", type(exc).__name__)


async def _reply_connection(
    connection: AbstractConnection, config: BrokerConfig, first: int
) -> AbstractConnection:
    if not config.reply_amqp_url:
        return connection
    urls = [
        with_heartbeat(with_vhost(url, config.vhost), config.heartbeat_s)
        for url in split_urls(config.reply_amqp_url)
    ]
    return await connect_any(urls, timeout=deadline_s(config), first=first)


async def close_session(session: Session, deadline: float, *, stopping: bool) -> None:
    """Close a session: the broker requeues everything delivered on its channel that was
    not committed, and rolls an open transaction back with it."""
    session.committer.break_off(session.why or "router stopping", expected=stopping)
    if session.lease is not None:
        session.lease.cancel()
    await close_quietly(session.connection, deadline)
    if session.replies is not None and session.replies is not session.connection:
        await close_quietly(session.replies, deadline)


def end(session: Session, why: str) -> None:
    """Mark a session over; the router's session keeper closes it and opens the next."""
    if not session.why:
        session.why = why
    session.ended.set()


async def close_quietly(connection: AbstractConnection, deadline: float) -> None:
    """Close a connection within `deadline` seconds, or drop it."""
    # A frozen node never answers Connection.Close: past the deadline the socket is
    # simply dropped (cancelling the close tears down aiormq's reader and writer).
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), deadline)
