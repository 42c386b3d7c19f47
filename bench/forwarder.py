"""A plain aio-pika forwarder: the baseline the trust router is compared with.

What a user would run without trust checks: consume the ingress queue, publish each
message to its recipient's queue (persistent), ack the ingress message. It reads the
recipient from the JSON (the only parsing a forwarder of these envelopes needs) and
publishes to the same `trust.deliver` exchange the router uses, so the messages land in
the same quorum queues. Two delivery disciplines:

  confirm  publisher confirms, ack after the confirm (what most users would write)
  tx       the router's own discipline: publish + ack in one AMQP transaction, grouped
           across messages (broker.amqp.committer.TransactionalCommitter)

    python bench/forwarder.py --amqp-url amqp://trust-admin:PW@127.0.0.1:5672/vhost --mode confirm

Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from broker.amqp.committer import Outbound, TransactionalCommitter
from broker.amqp.topology import declare_router_topology
from broker.config import Topology


async def forward(amqp_url: str, mode: str, prefetch: int) -> None:
    """Forward until a termination signal arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=mode == "confirm")
        await channel.set_qos(prefetch_count=prefetch)
        queue, deliver = await declare_router_topology(channel, Topology())
        if mode == "confirm":
            handler = _confirming(deliver)
        else:
            handler = _transactional(deliver, TransactionalCommitter(channel))
        tag = await queue.consume(handler)
        await stop.wait()
        await queue.cancel(tag)


Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


def _outgoing(message: AbstractIncomingMessage) -> aio_pika.Message:
    return aio_pika.Message(
        message.body,
        message_id=message.message_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _recipient(body: bytes) -> str:
    return str(orjson.loads(body)["recipient"])


def _confirming(deliver: AbstractExchange) -> Handler:
    async def on_message(message: AbstractIncomingMessage) -> None:
        # publish() returns once RabbitMQ confirmed the message; only then ack.
        await deliver.publish(_outgoing(message), routing_key=_recipient(message.body))
        await message.ack()

    return on_message


def _transactional(deliver: AbstractExchange, committer: TransactionalCommitter) -> Handler:
    async def on_message(message: AbstractIncomingMessage) -> None:
        out = Outbound(deliver.name, _recipient(message.body), _outgoing(message))
        await committer.commit(message, out)

    return on_message


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and forward until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", required=True, help="URL including the vhost")
    parser.add_argument("--mode", choices=["confirm", "tx"], default="confirm")
    parser.add_argument("--prefetch", type=int, default=512)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(forward(args.amqp_url, args.mode, args.prefetch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
