"""The fault suite's short seeded mode, as CI runs it: one `mix` run (every nemesis once,
in a seeded order) on the 3-node RabbitMQ cluster with Redis, a replica and Sentinels.

The long mode (every nemesis, several seeds, 5,000 messages each) is
`python -m tests.faults --nemesis all --seeds 1,2,3 --messages 5000`; its table is in
docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from broker import servers
from tests.faults.run import fault_cluster, run_once, start_fault_cluster


@pytest.mark.timeout(1200)
# Nodes are killed under open connections: aio-pika and aiormq leave a socket of a
# connection that died mid-handshake to the garbage collector. Not ours to close.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_short_seeded_fault_suite_loses_duplicates_and_blocks_nothing() -> None:
    cfg = fault_cluster(dict(os.environ))
    await asyncio.to_thread(start_fault_cluster, cfg)
    try:
        verdict = await run_once(cfg, "mix", 1, 1000, 30.0)
    finally:
        # Three more RabbitMQ nodes, a replica and Sentinels: not left running after CI.
        await asyncio.to_thread(servers.stop, cfg, print)
    row = verdict.row()
    print(f"[faults] short mode: {row}")
    confirmed = row["confirmed"]
    assert isinstance(confirmed, int) and confirmed >= 900, row  # producers got through
    assert (row["lost"], row["unexpected"], row["fault_blocked"]) == (0, 0, 0), (
        row, verdict.lost[:5], verdict.fault_blocked,
    )  # fmt: skip
    # Duplicates are the one open item (docs/RELIABILITY.md, "What is still open": a
    # commit given up on a frozen or dying node can still land). They are reported, and
    # fail the run only with TRUST_FAULTS_STRICT=1, until destination dedup closes it.
    if row["duplicated"]:
        print(f"[faults] OPEN: {row['duplicated']} ids delivered twice (raw AMQP)")
    if os.environ.get("TRUST_FAULTS_STRICT") == "1":
        assert row["duplicated"] == 0, list(verdict.duplicated)[:5]
