"""A peer's state: reading it for a decision (cached, with each voucher's own standing)
and the plain field writes that need no script (each drops the cached copy everywhere)."""

from __future__ import annotations

from dataclasses import replace

from broker.core.state import PeerState, Vouch
from broker.store import codec
from broker.store.base import StoreBase, as_bytes
from broker.store.batch import Command


class Peers(StoreBase):
    """Peer hashes and vouches as PeerState; fields set by the handshake and by ops."""

    async def peer(self, did: str, now_ms: int, *, cached: bool = True) -> PeerState:
        """A sender's state (cached for cache_ttl_ms, dropped on invalidation); admin
        reads pass cached=False to see writes other processes just made."""
        hit = self._peers.get(did, now_ms) if cached else None
        if hit is not None:
            return hit
        fields, vouch_fields = await self._together(
            Command.plain("HGETALL", self.keys.peer(did)),
            Command.plain("HGETALL", self.keys.vouches(did)),
        )
        state = codec.peer_from_hash(did, as_bytes(fields))
        if vouch_fields:
            state = replace(state, vouches=await self._vouch_facts(as_bytes(vouch_fields)))
        self._peers.put(did, state, now_ms)
        return state

    async def _vouch_facts(self, vouch_fields: dict[bytes, bytes]) -> tuple[Vouch, ...]:
        """Each vouch with its voucher's own standing (never the voucher's vouches)."""
        vouches = [codec.vouch_from(value) for value in vouch_fields.values()]
        async with self._redis.pipeline(transaction=False) as pipe:
            for vouch in vouches:
                pipe.hgetall(self.keys.peer(vouch.voucher))
            states = await self._call(pipe.execute())
        facts = []
        for vouch, fields in zip(vouches, states, strict=True):
            voucher = codec.peer_from_hash(vouch.voucher, as_bytes(fields))
            facts.append(
                replace(
                    vouch,
                    voucher_successes=voucher.successes,
                    voucher_failures=voucher.failures,
                    voucher_credential=voucher.credential,
                    voucher_revoked=voucher.revoked,
                )
            )
        return tuple(facts)

    async def revoke_key(self, did: str) -> None:
        """Revoke a sender's key: every router blocks it once the invalidation lands."""
        await self._set_peer(did, {codec.REVOKED: b"1"})

    async def record_possession(self, did: str, verified_ms: int, expires_ms: int) -> None:
        """Record a verified proof of key possession (from the handshake)."""
        await self._set_peer(
            did, {codec.POSSESSION_AT: str(verified_ms), codec.POSSESSION_UNTIL: str(expires_ms)}
        )

    async def set_expected_code(self, did: str, codebase_hash: str) -> None:
        """The codebase hash ops expect `did` to run; an attestation of another mismatches."""
        await self._set_peer(did, {codec.EXPECTED_CODE: codebase_hash})

    async def record_declared_trust(self, did: str, level: str) -> None:
        """Keep a self-declared trust level for the record; scoring never reads it."""
        await self._set_peer(did, {"declared_trust": level[:64]})

    async def set_clean_streak(self, did: str, count: int) -> None:
        """Set the number of clean messages since the sender's last anomaly."""
        await self._set_peer(did, {codec.CLEAN: str(count)})

    async def record_anomaly(self, did: str, now_ms: int, reason: str = "") -> None:
        """Put a sender under observation: its clean streak restarts from zero."""
        fields = {codec.ANOMALY: str(now_ms), codec.CLEAN: "0"}
        if reason:
            fields["anomaly_reason"] = reason
        await self._set_peer(did, dict[str, str | bytes](fields))
