"""The group-send queue shared by the AMQP committer and the Redis auto-pipeline."""

from __future__ import annotations

import asyncio

import pytest

from broker.grouping import GroupQueue


async def test_calls_arriving_while_a_group_is_in_flight_go_out_together() -> None:
    groups: list[list[int]] = []
    release = asyncio.Event()

    async def send(group: list[int]) -> list[int]:
        groups.append(group)
        await release.wait()
        return [n * 10 for n in group]

    queue: GroupQueue[int] = GroupQueue(send)
    first = asyncio.create_task(queue.submit(1))
    await asyncio.sleep(0)  # the first group is now on the wire
    later = [asyncio.create_task(queue.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    release.set()
    assert [await first, *[await t for t in later]] == [10, 20, 30, 40]
    assert groups == [[1], [2, 3, 4]]


async def test_max_group_splits_a_long_queue() -> None:
    groups: list[list[int]] = []

    async def send(group: list[int]) -> list[int]:
        groups.append(group)
        return group

    queue: GroupQueue[int] = GroupQueue(send, max_group=2)
    assert await asyncio.gather(*(queue.submit(n) for n in range(5))) == [0, 1, 2, 3, 4]
    assert groups == [[0, 1], [2, 3], [4]]


async def test_an_item_error_reaches_its_caller_and_a_group_error_reaches_all() -> None:
    async def per_item(group: list[int]) -> list[object]:
        return [ValueError(n) if n == 2 else n for n in group]

    queue: GroupQueue[int] = GroupQueue(per_item)
    results = await asyncio.gather(queue.submit(1), queue.submit(2), return_exceptions=True)
    one, two = results
    assert one == 1 and isinstance(two, ValueError)

    async def broken(group: list[int]) -> list[int]:
        raise ConnectionError("gone")

    failing: GroupQueue[int] = GroupQueue(broken)
    results = await asyncio.gather(*(failing.submit(n) for n in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_cancelled_caller_does_not_break_the_group() -> None:
    release = asyncio.Event()

    async def send(group: list[int]) -> list[int]:
        await release.wait()
        return group

    queue: GroupQueue[int] = GroupQueue(send)
    gone = asyncio.create_task(queue.submit(1))
    kept = asyncio.create_task(queue.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
