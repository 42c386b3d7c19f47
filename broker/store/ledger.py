"""Money a peer moves or stakes: the rolling 24 h spend (reserved against a cap in one
step), payment holds, and slashing the recorded bond."""

from __future__ import annotations

from broker.store import codec
from broker.store.base import StoreBase


class Ledger(StoreBase):
    """Spend, payment holds and bond slashes (lua/spent.lua, reserve_spend.lua,
    slash_bond.lua)."""

    async def spent(self, did: str, now_ms: int) -> int:
        """What `did` paid over the last 24 h, every currency together, in reference minor
        units."""
        total = await self._call(self._lua("spent")(keys=[self.keys.spend(did)], args=[now_ms]))
        return int(total)

    async def reserve_spend(
        self, did: str, amount_ref_minor: int, cap_ref_minor: int, message_id: str, now_ms: int
    ) -> bool:
        """Atomically add a payment (reference minor units) to the rolling 24 h total
        unless it would pass the cap."""
        args: list[str | int] = [now_ms, amount_ref_minor, cap_ref_minor, message_id]
        script = self._lua("reserve_spend")
        result = await self._call(script(keys=[self.keys.spend(did)], args=args))
        return int(result) >= 0

    async def hold_payments(self, did: str, until_ms: int) -> None:
        """Escalate `did`'s payments instead of delivering them until `until_ms`."""
        await self._set_peer(did, {codec.PAYMENT_HOLD: str(until_ms)})

    async def release_payments(self, did: str) -> None:
        """Lift a payment hold."""
        await self._call(self._redis.hdel(self.keys.peer(did), codec.PAYMENT_HOLD))
        await self.invalidate(f"peer:{did}")

    async def slash_bond(self, did: str, *, amount_minor: int = 0, fraction: float = 0.0) -> int:
        """Reduce the held bond by an amount plus a fraction of what is held (never below
        0), atomically; returns what is left."""
        script = self._lua("slash_bond")
        left = await self._call(script(keys=[self.keys.peer(did)], args=[amount_minor, fraction]))
        await self.invalidate(f"peer:{did}")
        return int(left)
