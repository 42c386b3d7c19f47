"""The policy in force and its history: every change is the next version, numbered in
Redis (lua/save_policy.lua), with who made it, when and why."""

from __future__ import annotations

import time
from typing import Any

import orjson

from broker.core.policy import Policy, load_policy
from broker.errors import PolicyError
from broker.store.base import StoreBase


class Policies(StoreBase):
    """Loading, saving and looking back at policy versions."""

    async def load_policy(self) -> Policy:
        """The stored policy, or the default one when none was ever stored."""
        raw = await self._call(self._redis.get(self.keys.policy))
        return Policy() if raw is None else load_policy(orjson.loads(raw))

    async def save_policy(self, policy: Policy, *, who: str = "system", why: str = "") -> Policy:
        """Put a validated policy in force as the next version; record who, when, why.

        The version is assigned here, atomically, so two operators saving at once get
        two versions rather than one lost update.
        """
        now = int(time.time() * 1000)
        content = policy.model_dump(mode="json", exclude={"version"})
        keys = [self.keys.policy, self.keys.policy_history]
        args: list[bytes | str | int] = [orjson.dumps(content), who, why, now]
        version = int(await self._call(self._lua("save_policy")(keys=keys, args=args)))
        await self.invalidate("policy")
        return policy.model_copy(update={"version": version})

    async def policy_history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recorded policy versions, newest first: version, who, at_ms, why, policy."""
        raw = await self._call(self._redis.lrange(self.keys.policy_history, 0, limit - 1))
        return [orjson.loads(item) for item in raw]

    async def policy_version(self, version: int) -> Policy:
        """An earlier policy version, as it was recorded."""
        for entry in await self.policy_history(limit=10_000):
            if entry["version"] == version:
                return load_policy({**entry["policy"], "version": version})
        if version == 1:
            return Policy()  # the built-in default
        raise PolicyError(f"no policy version {version} in the history")
