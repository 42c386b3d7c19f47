"""The store counts each finished message in its sender's behaviour windows (lua/finish.lua)
and the detectors (broker/core/behavior.py) judge the counts: each detector, driven
through finish against the real Redis, marks its sender under observation exactly when
its limit is crossed, and not one message before."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from broker.core.envelope import Envelope, sign_envelope
from broker.core.identity import AgentKey
from broker.core.policy import BehaviorModel, Policy
from broker.store.claims import Finish
from broker.store.redis import RedisStore

pytestmark = pytest.mark.integration

NOW = 1_800_000_000_000
MINUTE_MS = 60_000
POLICY = Policy(
    behavior=BehaviorModel(
        rate_floor_per_minute=20, baseline_minutes=1, new_recipients_per_hour=4,
        size_floor_bytes=2_000, size_baseline_messages=5, gate_failure_limit=3,
        outside_manifest_limit=2,
    )
)  # fmt: skip
_serial = itertools.count()


def _envelope(sender: AgentKey, recipient: str) -> Envelope:
    n = next(_serial)
    return sign_envelope(
        sender, id=f"behaviour-{n:08d}", recipient=recipient, kind="data", created_at=NOW,
        nonce=f"{n:032x}", body={"n": n},
    )  # fmt: skip


async def _finish(
    store: RedisStore, sender: AgentKey, now_ms: int, *, recipient: str = "", size: int = 100,
    gate_failed: bool = False, outside_manifest: bool = False,
) -> str:  # fmt: skip
    env = _envelope(sender, recipient or AgentKey(bytes([7]) * 32).did)
    result = Finish(
        action="deliver", clean=not gate_failed, delivered=not gate_failed,
        size=size, gate_failed=gate_failed, outside_manifest=outside_manifest,
        trace_id=f"{next(_serial):032x}",
    )  # fmt: skip
    return await store.finish(env, "0" * 64, result, POLICY, now_ms)


def _recipients() -> Callable[[], str]:
    keys = (AgentKey.generate().did for _ in itertools.count())
    return lambda: next(keys)


async def _first_anomaly(store: RedisStore, sends: Sequence[dict[str, Any]]) -> tuple[int, str]:
    """Finish `sends` in order for one new sender; (index of the first anomaly, reason)."""
    sender = AgentKey.generate()
    for index, send in enumerate(sends):
        anomaly = await _finish(store, sender, **send)
        if anomaly:
            raw = await store._redis.hgetall(store.keys.peer(sender.did))
            assert raw[b"anomaly_reason"] == anomaly.encode()
            assert int(raw[b"anomaly"]) == send["now_ms"]
            assert raw[b"clean"] == b"0"
            return index, anomaly
    return -1, ""


async def test_velocity_over_the_floor_once_a_baseline_minute_exists(store: RedisStore) -> None:
    # One quiet minute (the baseline), then 21 in the next: the 21st is over the floor.
    sends = [{"now_ms": NOW}] + [{"now_ms": NOW + MINUTE_MS}] * 25
    assert await _first_anomaly(store, sends) == (21, "velocity_spike")


async def test_fan_out_to_new_recipients(store: RedisStore) -> None:
    fresh = _recipients()
    sends = [{"now_ms": NOW, "recipient": fresh()} for _ in range(8)]
    assert await _first_anomaly(store, sends) == (4, "fan_out")  # the fifth new one


@pytest.mark.parametrize(("size", "expected"), [(2_001, (5, "payload_drift")), (2_000, (-1, ""))])
async def test_payload_drift_after_a_usual_size(
    store: RedisStore, size: int, expected: tuple[int, str]
) -> None:
    # A usual size of 100 (ten times that is under the 2,000 floor): over the floor trips.
    sends: list[dict[str, Any]] = [{"now_ms": NOW, "size": 100}] * 5
    sends += [{"now_ms": NOW, "size": size}]
    assert await _first_anomaly(store, sends) == expected


async def test_no_payload_drift_before_a_usual_size(store: RedisStore) -> None:
    sends: list[dict[str, Any]] = [{"now_ms": NOW, "size": 100}] * 4
    sends += [{"now_ms": NOW, "size": 100_000}]
    assert await _first_anomaly(store, sends) == (-1, "")


async def test_repeated_gate_failures_in_a_window(store: RedisStore) -> None:
    sends = [{"now_ms": NOW, "gate_failed": True}] * 5
    assert await _first_anomaly(store, sends) == (2, "gate_failures")


async def test_gate_failures_in_separate_windows_do_not_add_up(store: RedisStore) -> None:
    window = POLICY.behavior.window_ms
    sends = [{"now_ms": NOW + i * window, "gate_failed": True} for i in range(6)]
    assert await _first_anomaly(store, sends) == (-1, "")


async def test_capability_drift_outside_the_manifest(store: RedisStore) -> None:
    sends = [{"now_ms": NOW, "outside_manifest": True}] * 4
    assert await _first_anomaly(store, sends) == (1, "capability_drift")


async def test_an_ordinary_sender_is_never_marked(store: RedisStore) -> None:
    sends = [{"now_ms": NOW + i * 5_000, "size": 300 + i} for i in range(60)]
    assert await _first_anomaly(store, sends) == (-1, "")
