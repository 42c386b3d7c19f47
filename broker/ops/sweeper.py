"""The escalation sweeper, run by the routers (one at a time, under a lock in Redis): it
expires escalations nobody decided and re-scores those whose sender was asked for
evidence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.errors import ReviewError, TrustBrokerError
from broker.ops.escalations import Rescored, expire_escalations, rescore_escalation
from broker.store.redis import RedisStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sweep:
    """What one sweeper pass did."""

    expired: list[dict[str, Any]]
    rescored: list[Rescored]


async def sweep_once(
    config: BrokerConfig,
    store: RedisStore,
    now_ms: int,
    older_than_ms: int | None = None,
) -> Sweep:
    """Expire undecided escalations (after the policy's escalations.expire_after_ms unless
    `older_than_ms` is given), then re-score those awaiting evidence."""
    expired = await expire_escalations(config, store, now_ms, older_than_ms)
    rescored = []
    for trace_id in await store.awaiting_evidence():
        try:
            rescored.append(await rescore_escalation(config, store, trace_id, now_ms))
        except ReviewError as exc:
            if exc.code == "already_decided":
                await store.stop_awaiting_evidence(trace_id)  # decided elsewhere
            else:
                log.info("escalation %s not re-scored: %s", trace_id, exc)
    return Sweep(expired, rescored)


async def run_sweeper(
    config: BrokerConfig,
    store: RedisStore,
    stop: asyncio.Event,
    interval_s: float = 10.0,
    *,
    clock: Callable[[], int] = wall_clock_ms,
) -> None:
    """Every `interval_s`, on one router of the deployment at a time, run sweep_once
    (time limit from the policy in force); until `stop` is set."""
    lock_ms = max(1, int(interval_s * 900))  # a little under the interval: no pass is skipped
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return
        try:
            if await store.try_lock("escalation-sweeper", lock_ms):
                sweep = await sweep_once(config, store, clock())
                delivered = sum(r.delivered for r in sweep.rescored)
                if sweep.expired or delivered:
                    log.info(
                        "escalations: %d expired, %d delivered on re-score",
                        len(sweep.expired),
                        delivered,
                    )
        except TrustBrokerError as exc:
            log.warning("escalation sweep skipped: %s", exc)
        except Exception:
            # A bug must not stop the sweeping for good.
            log.exception("escalation sweep failed")
