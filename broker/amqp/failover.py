"""Connecting to a RabbitMQ cluster: several node URLs, each attempt with a deadline.

Every client of the broker (router, SDK, review, provisioning) takes a list of node URLs
and connects to the first that answers in time. A node that is down answers at once
(connection refused); one that is partitioned or frozen never answers, which is why
each attempt has a deadline of its own rather than waiting for the kernel's TCP timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from broker.amqp.errors import CONNECT_ERRORS
from broker.config import BrokerConfig, mask_url
from broker.errors import BrokerUnavailable

log = logging.getLogger("broker.amqp.failover")


class NoNodeAvailable(BrokerUnavailable, ConnectionError):
    """None of the configured RabbitMQ nodes accepted a connection in time; `errors` holds
    each node's failure, in the order tried."""

    def __init__(self, message: str, errors: Sequence[BaseException] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


def with_heartbeat(url: str, heartbeat_s: int) -> str:
    """The URL asking for this AMQP heartbeat unless it names one itself."""
    parsed = URL(url)
    if "heartbeat" in parsed.query:
        return url
    return str(parsed.update_query(heartbeat=str(heartbeat_s)))


async def connect_any(
    urls: Sequence[str], *, timeout: float = 10.0, first: int = 0
) -> AbstractConnection:
    """A plain connection to the first node, in turn from `first`, that accepts in time."""
    failures: list[str] = []
    errors: list[BaseException] = []
    for turn in range(len(urls)):
        url = urls[(first + turn) % len(urls)]
        try:
            return await asyncio.wait_for(aio_pika.connect(url, timeout=timeout), timeout)
        except CONNECT_ERRORS as exc:
            failures.append(f"{mask_url(url)}: {type(exc).__name__} {exc}".strip())
            errors.append(exc)
    raise NoNodeAvailable("no RabbitMQ node answered: " + "; ".join(failures), errors)


async def connect_config(
    config: BrokerConfig, *, timeout: float | None = None
) -> AbstractConnection:
    """A plain connection to one of `config`'s nodes, on its vhost (short-lived clients)."""
    wait = config.amqp_timeout_ms / 1000 if timeout is None else timeout
    return await connect_any(config.amqp_vhost_urls, timeout=wait)


class RotatingRobustConnection(RobustConnection):
    """aio-pika's robust connection, trying the next node on every (re)connect attempt.

    aio-pika reconnects to `self.url`; here that attribute hands out the nodes in turn.
    Connection.connect reads it exactly once per attempt (and __init__ and update_secret
    once each), so each attempt goes to the next node: a dead node costs one attempt."""

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any):
        self._nodes: list[URL] = [URL(url)]
        self._turn = 0
        super().__init__(url, loop, **kwargs)
        self._turn = 0

    def use_nodes(self, urls: Sequence[str]) -> None:
        """The nodes to rotate through (the first one is tried first)."""
        self._nodes = [URL(url) for url in urls]
        self._turn = 0

    @property
    def url(self) -> URL:
        node = self._nodes[self._turn % len(self._nodes)]
        self._turn += 1
        return node

    @url.setter
    def url(self, value: URL) -> None:
        # Connection.__init__ sets it; update_secret sets the same node with a new secret.
        if not hasattr(self, "_nodes"):
            return
        self._nodes = [n.with_password(value.password) for n in self._nodes]

    def __str__(self) -> str:
        return ",".join(mask_url(str(node)) for node in self._nodes)


async def connect_robust_any(
    urls: Sequence[str], *, timeout: float = 10.0
) -> AbstractRobustConnection:
    """A robust connection to the first node that answers; whenever it loses its node it
    reconnects to the next one, once a second."""
    failures: list[str] = []
    errors: list[BaseException] = []
    for turn in range(len(urls)):
        nodes = [*urls[turn:], *urls[:turn]]
        connection = RotatingRobustConnection(URL(nodes[0]), reconnect_interval=1)
        connection.use_nodes(nodes)
        try:
            await asyncio.wait_for(connection.connect(timeout=timeout), timeout)
        except CONNECT_ERRORS as exc:
            await connection.close()
            failures.append(f"{mask_url(nodes[0])}: {type(exc).__name__} {exc}".strip())
            errors.append(exc)
            continue
        return connection
    raise NoNodeAvailable("no RabbitMQ node answered: " + "; ".join(failures), errors)
