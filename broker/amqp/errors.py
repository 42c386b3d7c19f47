"""What RabbitMQ's client can raise, named once (the only module outside broker/amqp's
own that needs aio-pika's or aiormq's exception classes imports them from here).

A lost, closed or replaced connection or channel shows itself as one of AMQP_ERRORS:
aio-pika's and aiormq's AMQPError family, a socket error or timeout (OSError covers
ConnectionError and TimeoutError), or RuntimeError from a writer closed underneath a
call. Code that must survive RabbitMQ going away catches exactly these, so that a bug
(a TypeError, a KeyError) still surfaces as a bug.
"""

from __future__ import annotations

from aio_pika.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    ProbableAuthenticationError,
)
from aiormq.exceptions import ChannelAccessRefused, ChannelLockedResource

# Everything a connection attempt to one node raises when that node cannot be used.
CONNECT_ERRORS: tuple[type[Exception], ...] = (AMQPError, OSError)
# A call on a channel that closed or whose connection went away (aiormq's
# ChannelInvalidStateError is a RuntimeError, the only one caught here).
CHANNEL_ERRORS: tuple[type[Exception], ...] = (AMQPError, OSError, ChannelInvalidStateError)
# The same, and any RuntimeError a writer closed underneath the call raises: for closing
# and best-effort steps, where a broken connection is no reason to stop.
AMQP_ERRORS: tuple[type[Exception], ...] = (AMQPError, OSError, RuntimeError)

__all__ = [
    "AMQP_ERRORS",
    "CHANNEL_ERRORS",
    "CONNECT_ERRORS",
    "AMQPConnectionError",
    "AMQPError",
    "ChannelAccessRefused",
    "ChannelInvalidStateError",
    "ChannelLockedResource",
    "ChannelNotFoundEntity",
    "DeliveryError",
    "ProbableAuthenticationError",
]  # fmt: skip
