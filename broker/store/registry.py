"""Who the deployment knows: registered recipients, the ingress lanes the routers consume,
the trusted issuers and the revoked evidence (these two are the globals every decision
reads)."""

from __future__ import annotations

from typing import Any

import orjson

from broker.core.state import IssuerRole, RecipientProfile, TrustList
from broker.store import codec
from broker.store.base import Globals, StoreBase, as_bytes, text


class Registry(StoreBase):
    """Recipients, lanes, issuers and revoked evidence ids, cached where decisions read."""

    async def recipient(self, did: str, now_ms: int) -> RecipientProfile | None:
        """A recipient's profile, or None when unknown."""
        cached = self._recipients.get(did, now_ms)
        if cached is not None:
            return cached
        fields = await self._call(self._redis.hgetall(self.keys.recipient(did)))
        profile = codec.recipient_from_hash(did, as_bytes(fields))
        if profile is not None:
            # Unknown recipients are not cached: registering one must take effect at once.
            self._recipients.put(did, profile, now_ms)
        return profile

    async def register_recipient(self, profile: RecipientProfile) -> None:
        """Register (or update) an agent that may receive messages."""
        key = self.keys.recipient(profile.did)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=dict[Any, Any](codec.recipient_to_hash(profile)))
            await self._call(pipe.execute())
        await self.invalidate(f"recipient:{profile.did}")

    async def recipient_dids(self, limit: int = 10_000) -> list[str]:
        """DIDs of registered recipients (provisioned agents), up to `limit`."""
        prefix = self.keys.recipient("")

        async def scan() -> list[str]:
            found: list[str] = []
            async for key in self._redis.scan_iter(match=prefix + "*", count=500):
                found.append(key.decode()[len(prefix) :])
                if len(found) >= limit:
                    break
            return found

        return await self._call(scan())

    async def add_lane(self, did: str) -> None:
        """Record that `did` has an ingress lane (after the admin declared it) and tell
        the routers, which start consuming it at once (and find it on their next poll
        if they missed the announcement)."""
        await self._call(self._redis.sadd(self.keys.lanes, did))
        await self.invalidate(f"lane:{did}")

    async def lanes(self) -> set[str]:
        """The DIDs whose ingress lanes the routers consume."""
        members = await self._call(self._redis.smembers(self.keys.lanes))
        return {text(m) for m in members}

    async def globals(self, now_ms: int) -> Globals:
        """The issuer trust list and revoked evidence ids."""
        cached = self._globals.get("globals", now_ms)
        if cached is not None:
            return cached
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.issuers)
            pipe.smembers(self.keys.revoked_evidence)
            pipe.hgetall(self.keys.issuer_trust)
            issuers, revoked, trust = await self._call(pipe.execute())
        roles = {
            did.decode(): frozenset(orjson.loads(value)) for did, value in as_bytes(issuers).items()
        }
        weights = {did.decode(): float(value) for did, value in as_bytes(trust).items()}
        shared = Globals(TrustList(roles, weights), frozenset(r.decode() for r in revoked))
        self._globals.put("globals", shared, now_ms)
        return shared

    async def add_issuer(
        self,
        did: str,
        roles: frozenset[IssuerRole] | set[IssuerRole],
        *,
        trust: float | None = None,
    ) -> None:
        """Trust `did` for `roles` (added to any it already has); `trust` in [0, 1] is how
        far its federation records count."""
        if not roles:
            raise ValueError("an issuer is trusted for at least one role")
        if trust is not None and not 0.0 <= trust <= 1.0:
            raise ValueError("an issuer's trust weight is between 0 and 1")
        current = (await self.issuer_roles()).get(did, frozenset())
        merged = sorted(current | {IssuerRole(role).value for role in roles})
        await self._call(self._redis.hset(self.keys.issuers, did, orjson.dumps(merged)))
        if trust is not None:
            await self._call(self._redis.hset(self.keys.issuer_trust, did, str(trust)))
        await self.invalidate("globals")

    async def issuer_trust(self) -> dict[str, float]:
        """Trust weights of federation issuers, as they are in Redis now."""
        raw = await self._call(self._redis.hgetall(self.keys.issuer_trust))
        return {k.decode(): float(v) for k, v in as_bytes(raw).items()}

    async def remove_issuer(
        self, did: str, roles: frozenset[IssuerRole] | set[IssuerRole] | None = None
    ) -> None:
        """Stop trusting `did` for `roles` (all of them by default); what it issued stops
        counting on every router's next decision."""
        left = set() if roles is None else set((await self.issuer_roles()).get(did, ()))
        left -= {IssuerRole(role).value for role in roles or ()}
        if left:
            await self._call(self._redis.hset(self.keys.issuers, did, orjson.dumps(sorted(left))))
        else:
            await self._call(self._redis.hdel(self.keys.issuers, did))
        if IssuerRole.FEDERATION.value not in left:
            await self._call(self._redis.hdel(self.keys.issuer_trust, did))
        await self.invalidate("globals")

    async def issuer_roles(self) -> dict[str, frozenset[str]]:
        """The trust list as it is in Redis now: issuer DID -> roles."""
        raw = await self._call(self._redis.hgetall(self.keys.issuers))
        return {k.decode(): frozenset(orjson.loads(v)) for k, v in as_bytes(raw).items()}

    async def revoke_evidence(self, evidence_id: str) -> bool:
        """Revoke a recorded credential, attestation or bond by id; False (and nothing
        changed) for an id never recorded here."""
        if not await self._call(self._redis.hexists(self.keys.evidence_ids, evidence_id)):
            return False
        await self._call(self._redis.sadd(self.keys.revoked_evidence, evidence_id))
        await self.invalidate("globals")
        return True

    async def evidence_subject(self, evidence_id: str) -> str | None:
        """'<kind>|<subject>' of a recorded piece of evidence, or None."""
        raw = await self._call(self._redis.hget(self.keys.evidence_ids, evidence_id))
        return None if raw is None else text(raw)
