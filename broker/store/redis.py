"""RedisStore: the broker's state in Redis, composed of one class per aggregate.

Each base class owns one concern and its Lua scripts (lua/*.lua); StoreBase (base.py) is
what they share: the client, Redis errors mapped to StoreUnavailable, the shared
pipelines, the local caches and their invalidation over pub/sub. The review queue of
serious reports and the federation records are parts reached as `store.serious` and
`store.federation`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from broker.core.envelope import Envelope
from broker.core.state import TrustContext
from broker.store.claims import Claims
from broker.store.evidence import Evidence
from broker.store.indoubt import InDoubtOutcomes
from broker.store.ledger import Ledger
from broker.store.once import Once
from broker.store.peers import Peers
from broker.store.policies import Policies
from broker.store.registry import Registry
from broker.store.reputation import Reputation
from broker.store.reviews import Reviews
from broker.store.traces import Traces


class RedisStore(
    Claims, Traces, Peers, Registry, Evidence, Reputation, Ledger, Once, Policies, Reviews,
    InDoubtOutcomes,
):  # fmt: skip
    """The PeerStateStore backed by Redis."""

    async def context(
        self, env: Envelope, now_ms: int, *, replayed: bool, cached: bool = True
    ) -> TrustContext:
        """Everything a decision reads about this message, cached where safe: the sender
        (with its 24 h spend for a payment), the recipient, the globals and their pact."""
        peer = await self.peer(env.sender, now_ms, cached=cached)
        if env.payment is not None:
            peer = replace(peer, spent_24h_ref=await self.spent(env.sender, now_ms))
        recipient = await self.recipient(env.recipient, now_ms)
        shared = await self.globals(now_ms)
        pact = await self.pact(env.sender, env.recipient, now_ms)
        return TrustContext(
            peer=peer,
            recipient=recipient,
            issuers=shared.issuers,
            revoked_evidence=shared.revoked_evidence,
            pact=pact,
            replayed=replayed,
        )


async def wait_until_available(store: RedisStore, retry_ms: int, stop: asyncio.Event) -> bool:
    """Poll until Redis answers (True) or `stop` is set (False)."""
    while not stop.is_set():
        if await store.ping():
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_ms / 1000)
    return False
