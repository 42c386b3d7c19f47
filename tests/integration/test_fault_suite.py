"""The fault suite's short seeded mode, as CI runs it: one `mix` run (every nemesis once,
in a seeded order) on the 3-node RabbitMQ cluster with Redis, a replica and Sentinels;
and the fault behind its duplicates, made to happen on purpose: a node frozen while
commits are in flight.

The long mode (every nemesis, several seeds, 5,000 messages each) is
`python -m tests.faults --nemesis all --seeds 1,2,3 --messages 5000`; its table is in
docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker.amqp.committer import TransactionalCommitter
from broker.app import open_store
from broker.cli.settings import local_urls
from broker.config import BrokerConfig
from broker.devkit import cluster, servers
from broker.devkit.layout import ServerConfig
from broker.devkit.rabbitmq_server import rabbit_pid
from broker.router import Router
from tests.faults.run import _drain_queue, fault_cluster, make_world, run_once, start_fault_cluster

# Nodes are killed under open connections: aio-pika and aiormq leave a socket of a
# connection that died mid-handshake to the garbage collector. Not ours to close.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def fault_cfg() -> Iterator[ServerConfig]:
    cfg = fault_cluster(dict(os.environ))
    start_fault_cluster(cfg)
    yield cfg
    # Three more RabbitMQ nodes, a replica and Sentinels: not left running after CI.
    servers.stop(cfg, print)


@pytest.mark.timeout(600)
async def test_a_node_frozen_under_commits_delivers_nothing_twice(
    fault_cfg: ServerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node 1, where every queue was declared and so leads, freezes for 20 s with router
    A's commit in its socket buffer; router B's commits on node 2 stall too (their
    publishes and acks wait on the frozen leaders). A commit given up at its deadline
    (10 s before, 3 s here to make it certain) left a publish that landed without its
    ack: the message came back and was routed again, 3 and 4 ids of 1,500 twice in two
    runs. Now a commit is waited for (30 s) and a retry waits for its holder's lease."""
    world = await make_world(fault_cfg, 1, tmp_path)
    nodes = local_urls(fault_cfg)["router_amqp"].split(",")
    pid = rabbit_pid(cluster.node(fault_cfg, 0))
    assert pid is not None
    armed, frozen = asyncio.Event(), asyncio.Event()
    commits_on_node_1: list[int] = []
    stalled: list[int] = []  # commits that took more than 5 s: held up by the freeze
    commit_now = TransactionalCommitter._commit_now

    async def freeze_at_second_commit(
        self: TransactionalCommitter, batch: list[Any], attempt: Any
    ) -> Any:
        # Router A's second commit that publishes (the channel is in a transaction by
        # then): the node stops just before the commit's frames reach it.
        session = a[0]._session
        if armed.is_set() and session is not None and self is session.committer:
            if any(item.publish for item in batch):
                commits_on_node_1.append(len(batch))
            if len(commits_on_node_1) == 2 and not frozen.is_set():
                os.kill(pid, signal.SIGSTOP)
                frozen.set()
        started = asyncio.get_running_loop().time()
        result = await commit_now(self, batch, attempt)
        if asyncio.get_running_loop().time() - started > 5:
            stalled.append(len(batch))
        return result

    monkeypatch.setattr(TransactionalCommitter, "_commit_now", freeze_at_second_commit)
    sender, (recipient, recipient_url) = world.senders[0], world.recipients[0]
    ids = [str(uuid.uuid4()) for _ in range(1_500)]
    for message_id in ids:  # enough that A still has some when B has started
        await sender.send(recipient.did, {"n": message_id}, message_id=message_id)
    # Both know every node (a router asks a holder's own node about its lease); A
    # starts on node 1, B on node 2.
    a = _router(replace(world.config, amqp_url=",".join(nodes)))
    b = _router(replace(world.config, amqp_url=",".join([nodes[1], nodes[2], nodes[0]])))
    a[0]._next_node = b[0]._next_node = 0
    routers = [a, b]
    try:
        # Both consume before the freeze; A's second commit after that freezes node 1.
        await a[0].start()
        await b[0].start()
        armed.set()
        await asyncio.wait_for(frozen.wait(), 30)
        await asyncio.sleep(20)
        os.kill(pid, signal.SIGCONT)
        delivered = await _until_all_in(world, recipient.did, recipient_url, len(ids))
    finally:
        os.kill(pid, signal.SIGCONT)
        for router, store in routers:
            await router.stop()
            await store.close()
    twice = sorted(i for i, n in delivered.items() if n > 1)
    verdicts = [router._indoubt.verdicts for router, _ in routers]
    assert not twice, f"{len(twice)} ids delivered twice, e.g. {twice[:3]}; {verdicts}"
    assert sorted(delivered) == sorted(ids)
    # The fault really happened: commits stalled on the frozen node (stalled_commits).
    assert stalled, "no commit was in flight across the freeze"


def _router(config: BrokerConfig) -> tuple[Router, Any]:
    deadline = os.environ.get("TRUST_TEST_COMMIT_TIMEOUT_MS")  # to measure other deadlines
    if deadline:
        config = replace(config, commit_timeout_ms=int(deadline))
    store = open_store(config)
    return Router(config, store), store


async def _until_all_in(world: Any, did: str, url: str, total: int) -> dict[str, int]:
    """Drain the recipient's queue (raw AMQP, so a duplicate shows) until `total` distinct
    ids arrived and 15 s more passed (a late second copy has time to show)."""
    delivered: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    deadline, complete_at = loop.time() + 240, None
    while loop.time() < deadline:
        for message_id, count in (await _drain_queue(did, url, world)).items():
            delivered[message_id] = delivered.get(message_id, 0) + count
        if len(delivered) >= total and complete_at is None:
            complete_at = loop.time()
        if complete_at is not None and loop.time() - complete_at > 15:
            break
        await asyncio.sleep(1.0)
    return delivered


@pytest.mark.timeout(1200)
async def test_short_seeded_fault_suite_loses_duplicates_and_blocks_nothing(
    fault_cfg: ServerConfig,
) -> None:
    verdict = await run_once(fault_cfg, "mix", 1, 1000, 30.0)
    row = verdict.row()
    print(f"[faults] short mode: {row}")
    confirmed = row["confirmed"]
    assert isinstance(confirmed, int) and confirmed >= 900, row  # producers got through
    assert (row["lost"], row["unexpected"], row["fault_blocked"]) == (0, 0, 0), (
        row, verdict.lost[:5], verdict.fault_blocked,
    )  # fmt: skip
    # Duplicates remain possible where a commit is half applied (docs/RELIABILITY.md,
    # "What is still open": a node frozen past the commit deadline, a node that dies
    # mid-commit). They are reported, and fail the run only with TRUST_FAULTS_STRICT=1.
    if row["duplicated"]:
        print(f"[faults] OPEN: {row['duplicated']} ids delivered twice (raw AMQP)")
    if os.environ.get("TRUST_FAULTS_STRICT") == "1":
        assert row["duplicated"] == 0, list(verdict.duplicated)[:5]
