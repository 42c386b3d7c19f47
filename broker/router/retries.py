"""May a redelivered message be routed? Only once the session that claimed it can commit
nothing more, and not at all once that session committed it (broker/amqp/indoubt.py).

A retry of another session's claim is kept back here for up to `in_doubt_hold_ms` while
that session's lease lives (then `HeldBack` returns it to its queue), and taken over by
compare-and-set, so two routers never both route it. Anything first claimed longer ago
than `in_doubt_max_ms` is routed regardless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from broker.amqp.indoubt import HeldBack, InDoubt, Verdict
from broker.config import BrokerConfig
from broker.core.envelope import Envelope
from broker.router.metrics import RouterMetrics
from broker.router.sessions import Session
from broker.store.claims import Claimed, HandOver
from broker.store.redis import RedisStore

log = logging.getLogger("broker.router")
_POLL_S = 0.5


class Retries:
    """Settles retries for one router: `session` is its current session (or None), `held`
    counts the envelope ids it is deciding or committing right now."""

    def __init__(
        self,
        config: BrokerConfig,
        store: RedisStore,
        indoubt: InDoubt,
        metrics: RouterMetrics,
        clock: Callable[[], int],
        *,
        session: Callable[[], Session | None],
        held: Counter[str],
    ) -> None:
        self._config = config
        self._store = store
        self._indoubt = indoubt
        self._metrics = metrics
        self._clock = clock
        self._session = session
        self._held = held

    async def settle(self, env: Envelope, digest: str, claimed: Claimed) -> bool:
        """May this retry be routed? Meanwhile it is kept back (see the module's doc)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._config.in_doubt_hold_ms / 1000
        holder = claimed.holder
        while True:
            session = self._session()
            if session is not None and holder == session.holder:
                # Claimed by this very session: handed back by it (a store outage), or a
                # second copy of a message still in flight here.
                return self._held[env.id] <= 1
            verdict = await self._verdict(holder, env.id, claimed.first_ms)
            if verdict is Verdict.WAIT:
                if loop.time() >= give_up:
                    raise HeldBack(f"{env.id}: its holder may still commit it")
                await asyncio.sleep(_POLL_S)
                result = await self._store.hand_over(env, digest, holder, holder)
            else:
                me = session.holder if session is not None else ""
                result = await self._store.hand_over(env, digest, holder, me)
                self._metrics.in_doubt.labels(verdict.value).inc()
            if result.state is HandOver.DONE:
                return False
            if result.state is HandOver.HELD:
                holder = result.holder
            elif verdict is not Verdict.WAIT or result.state in (HandOver.GONE, HandOver.REPLAY):
                return True

    async def _verdict(self, holder: str, message_id: str, first_ms: int | None) -> Verdict:
        if not holder:
            return Verdict.ROUTE  # claimed before claims named their holder, or released
        if first_ms is not None and self._clock() - first_ms > self._config.in_doubt_max_ms:
            log.warning("routing %s: its holder %s has held it too long", message_id, holder)
            return Verdict.ROUTE
        return await self._indoubt.settle(holder)
