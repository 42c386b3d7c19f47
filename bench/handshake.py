"""Handshake latency over AMQP: cold (challenge-response) and warm (live session resumed).

One router process (`python -m broker router`) answers on `trust.handshake`; agents in
this process call the SDK's `AgentClient.handshake()` exactly as an agent would:

  cold             a new key: hello -> broker-signed challenge -> signed answer -> proved
                   (two request/replies, a Redis challenge written and taken, two Ed25519
                   signatures each way, possession recorded)
  cold+connect     the same, on a freshly opened AMQP connection (a just-started agent)
  warm             handshake(resume=True) for an agent whose session is live: one
                   request/reply, answered from the router's cache or one Redis read
  warm-ch-per-request  the same request the way the SDK sent it before db557af: a
                   channel and reply consumer opened per request (the "before")

Every request/reply uses RabbitMQ direct reply-to. Rounds alternate cold and warm.

    python bench/handshake.py --json bench/results/handshake.json
    python bench/handshake.py --quick            # a few seconds: the CI smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from harness import (
    add_server_args,
    latency_summary,
    machine_info,
    print_machine,
    print_table,
    private_world,
    router_argv,
    server_config,
    start_procs,
    stop_procs,
    write_json,
)

from broker.core.identity import AgentKey
from broker.sdk.client import AgentClient

TARGETS_MS = {"cold": 20.0, "warm": 2.0}


class SharedConnectionClient(AgentClient):
    """The SDK client on an already open connection, so one process can be many agents."""

    def __init__(self, key: AgentKey, url: str, connection: AbstractRobustConnection) -> None:
        super().__init__(key, url)
        self._connection = connection


class ChannelPerRequestClient(SharedConnectionClient):
    """The SDK as it was before one channel carried every request (commit db557af): a
    channel and a reply consumer opened and closed for each request. Kept to show, in
    the same run, what that change bought."""

    async def _negotiate(
        self, request: dict[str, Any], timeout: float = 10.0, *, user_id: str | None = None
    ) -> dict[str, Any]:
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            replies: asyncio.Queue[bytes] = asyncio.Queue()

            async def on_reply(message: AbstractIncomingMessage) -> None:
                await replies.put(message.body)

            reply_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
            await reply_queue.consume(on_reply, no_ack=True)
            exchange = await channel.get_exchange("trust.handshake", ensure=False)
            message = aio_pika.Message(
                orjson.dumps(request),
                reply_to="amq.rabbitmq.reply-to",
                correlation_id=uuid.uuid4().hex,
                user_id=user_id,
            )
            await exchange.publish(message, routing_key="")
            body = await asyncio.wait_for(replies.get(), timeout)
        finally:
            await channel.close()
        reply: dict[str, Any] = orjson.loads(body)
        return reply


async def _timed(samples: list[float], call: Callable[[], Awaitable[Any]]) -> None:
    start = time.perf_counter_ns()
    await call()
    samples.append((time.perf_counter_ns() - start) / 1e6)


async def measure(
    args: argparse.Namespace, url: str, shared: AbstractRobustConnection
) -> dict[str, list[float]]:
    """Alternate cold and warm handshakes for `args.rounds` rounds."""
    samples: dict[str, list[float]] = {
        "cold": [], "cold+connect": [], "warm": [], "warm-ch-per-request": [],
    }  # fmt: skip
    warm_agent = SharedConnectionClient(AgentKey.generate(), url, shared)
    await warm_agent.handshake()
    before = ChannelPerRequestClient(warm_agent.key, url, shared)
    await before.handshake(resume=True)
    for _ in range(args.rounds):
        for _ in range(args.handshakes):
            agent = SharedConnectionClient(AgentKey.generate(), url, shared)
            await _timed(samples["cold"], agent.handshake)
        for _ in range(max(1, args.handshakes // 10)):
            await _timed(samples["cold+connect"], lambda: _connect_and_handshake(url))
        for _ in range(args.handshakes):
            await _timed(samples["warm"], lambda: warm_agent.handshake(resume=True))
        for _ in range(args.handshakes):
            await _timed(samples["warm-ch-per-request"], lambda: before.handshake(resume=True))
    return samples


async def _connect_and_handshake(url: str) -> None:
    async with AgentClient(AgentKey.generate(), url) as agent:
        await agent.handshake()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start a router, run the rounds, return the report."""
    async with private_world(server_config(args), "handshake") as world:
        machine = await machine_info(world)
        print_machine(machine)
        procs = await start_procs(world, [("router", router_argv(512))])
        try:
            # Warm-up: first use of every code path and connection pool in the router.
            warm = SharedConnectionClient(AgentKey.generate(), world.amqp_url, world.connection)
            for _ in range(20):
                await warm.handshake()
            samples = await measure(args, world.amqp_url, world.connection)
        finally:
            stop_procs(procs)
    rows = {name: latency_summary(values) for name, values in samples.items()}
    print_table(
        ["handshake", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "target p50"],
        [
            [name, r["n"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"],
             f"<= {TARGETS_MS[name]:g} ms" if name in TARGETS_MS else ""]
            for name, r in rows.items()
        ],
    )  # fmt: skip
    return {
        "machine": machine,
        "parameters": {k: v for k, v in vars(args).items() if k != "json"},
        "summary": rows,
        "targets_ms": TARGETS_MS,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write JSON if asked."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_args(parser)
    parser.add_argument("--handshakes", type=int, default=200, help="per kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few seconds: CI smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.handshakes, args.rounds = 10, 1
    report = asyncio.run(run(args))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
