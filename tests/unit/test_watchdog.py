"""The router's watchdog (broker/router/watchdog.py) on a real event loop."""

from __future__ import annotations

import asyncio
import time

from broker.router.watchdog import Watchdog


async def test_a_blocked_loop_is_a_stall_and_a_running_one_is_not() -> None:
    watchdog = Watchdog(stall_ms=100, tick_s=0.02)
    assert watchdog.awake()  # not started yet: nothing to judge
    stopping, stalls = asyncio.Event(), list[float]()
    task = asyncio.create_task(watchdog.run(stopping, stalls.append))
    await asyncio.sleep(0.2)  # ticking on time
    assert stalls == [] and watchdog.awake()
    time.sleep(0.3)  # the whole loop stands still, as under SIGSTOP
    assert not watchdog.awake()  # a commit asked now is refused
    await asyncio.sleep(0.1)
    assert len(stalls) == 1 and stalls[0] >= 0.3
    assert watchdog.awake()  # ticking again
    stopping.set()
    await asyncio.wait_for(task, 1.0)


async def test_a_pause_shorter_than_the_limit_is_no_stall() -> None:
    watchdog = Watchdog(stall_ms=500, tick_s=0.02)
    stopping, stalls = asyncio.Event(), list[float]()
    task = asyncio.create_task(watchdog.run(stopping, stalls.append))
    await asyncio.sleep(0.05)
    time.sleep(0.2)
    assert watchdog.awake()
    await asyncio.sleep(0.05)
    assert stalls == []
    stopping.set()
    await asyncio.wait_for(task, 1.0)
