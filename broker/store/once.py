"""What may happen only once, or only one at a time: handshake challenges (single use,
bounded per login), presentations, one-time marks and locks."""

from __future__ import annotations

from enum import StrEnum

from broker.store.base import StoreBase, text


class Issued(StrEnum):
    """What became of a new handshake challenge."""

    OK = "ok"
    REPLACED = "replaced"  # issued; the agent's oldest pending challenge was dropped
    BUSY = "busy"  # the global bound: not issued


class Once(StoreBase):
    """Challenges (lua/issue_challenge.lua, take_challenge.lua), marks and locks."""

    async def issue_challenge(
        self,
        challenge: str,
        agent: str,
        expires_ms: int,
        now_ms: int,
        max_pending: int,
        *,
        bucket: str = "-",
        per_bucket: int = 8,
    ) -> Issued:
        """Remember a challenge until it expires, holding at most `per_bucket` pending for
        one `bucket` (the validated login that asked; its oldest is dropped to make room)
        and `max_pending` in all (BUSY: nothing issued)."""
        keys = [
            self.keys.challenges,
            self.keys.challenge(challenge),
            self.keys.challenges_of(bucket),
        ]
        args: list[str | int] = [now_ms, expires_ms, agent, max_pending, max(1, per_bucket)]
        return Issued(text(await self._call(self._lua("issue_challenge")(keys=keys, args=args))))

    async def take_challenge(self, challenge: str) -> tuple[str, int] | None:
        """(agent, expires_ms) of a pending challenge, removing it; None if unknown/used."""
        keys = [self.keys.challenges, self.keys.challenge(challenge)]
        raw = await self._call(self._lua("take_challenge")(keys=keys, args=[]))
        if not raw:
            return None
        agent, _, expires = text(raw).rpartition("|")
        return agent, int(expires)

    async def mark_presentation(self, presentation_id: str, ttl_ms: int) -> bool:
        """True the first time a presentation id is used within `ttl_ms`, False after."""
        key = self.keys.presentation(presentation_id)
        return bool(await self._call(self._redis.set(key, b"1", nx=True, px=ttl_ms)))

    async def mark_once(self, name: str) -> bool:
        """True the first time `name` is marked (kept 400 days), False ever after."""
        key = f"{self.keys.prefix}once:{name}"
        return bool(await self._call(self._redis.set(key, b"1", nx=True, px=400 * 86_400_000)))

    async def try_lock(self, name: str, ttl_ms: int) -> bool:
        """True for the one caller that takes `name` until it expires after `ttl_ms`."""
        key = self.keys.lock(name)
        return bool(await self._call(self._redis.set(key, b"1", nx=True, px=ttl_ms)))
