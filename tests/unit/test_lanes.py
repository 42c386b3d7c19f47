"""Ingress lanes, the pure parts: who may read and write which lane, and the SDK's
publish window under push-back."""

from __future__ import annotations

import asyncio
import re

from broker.config import Topology
from broker.ops.provision import agent_permissions, router_permissions
from broker.sdk.publishing import Window

ME = "did:key:z6MkmeMEme"
YOU = "did:key:z6MkyouYOU"


def test_an_agent_writes_only_its_own_lane_and_the_handshake() -> None:
    perms = agent_permissions(Topology(), ME)
    allowed = [f"trust.in.{ME}", "trust.handshake"]
    refused = [f"trust.in.{YOU}", "trust.ingress", f"trust.in.{ME}x", "trust.in.", "amq.default"]
    assert all(re.fullmatch(perms["write"], name) for name in allowed)
    assert not any(re.fullmatch(perms["write"], name) for name in refused)
    assert not re.fullmatch(perms["read"], f"trust.lane.{ME}")


def test_the_router_reads_every_lane_but_no_agent_queue() -> None:
    perms = router_permissions(Topology())
    allowed = ["trust.ingress", "trust.escalations", f"trust.lane.{ME}", f"trust.lane.{YOU}"]
    refused = [f"agent.{ME}", "trust.lane.", "trust.lane.x", "trust.handshake", "trust.blocked"]
    assert all(re.fullmatch(perms["read"], name) for name in allowed)
    assert not any(re.fullmatch(perms["read"], name) for name in refused)
    assert not re.fullmatch(perms["write"], f"trust.in.{ME}")


async def test_a_nack_halves_the_window_and_each_confirm_widens_it() -> None:
    window = Window(8)
    for _ in range(8):
        await window.acquire(1.0)
    for _ in range(3):
        await window.release(False)  # 8 -> 4 -> 2 -> 1
    assert window.size == 1
    # Five still in flight: a ninth publish waits until they are down to the window.
    waiting = asyncio.create_task(window.acquire(1.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    for _ in range(5):
        await window.release(True)  # 1 -> 6
    await waiting
    assert window.size == 6
