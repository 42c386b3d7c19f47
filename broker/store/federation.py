"""Federation state in Redis (store side).

As an issuer: the index each exported trust credential holds in this broker's revocation
bitstring, and the bitstring itself (Redis SETBIT numbers bits left-most first, as the W3C
Bitstring Status List does). As an importer: other brokers' verified status lists, newest
first, and which imported records each list covers.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from broker.store.keys import Keys
from broker.store.lua import lua_script
from broker.store.part import Call, StorePart

_NEXT = "_next"


class FederationStore(StorePart):
    """Status list bookkeeping for issuing and importing trust credentials."""

    def __init__(self, client: aioredis.Redis, keys: Keys, call: Call) -> None:
        super().__init__(client, keys, call)
        self._store_list = client.register_script(lua_script("store_status_list"))

    async def allocate_index(self, credential_id: str) -> int:
        """A fresh status list index for a credential about to be issued."""
        index = int(await self._call(self._redis.hincrby(self._keys.fed_issued, _NEXT, 1))) - 1
        await self._call(self._redis.hset(self._keys.fed_issued, credential_id, index))
        return index

    async def issued_index(self, credential_id: str) -> int | None:
        """The status list index of a credential this broker issued, or None."""
        if credential_id == _NEXT:
            return None
        raw = await self._call(self._redis.hget(self._keys.fed_issued, credential_id))
        return None if raw is None else int(raw)

    async def set_revoked(self, index: int) -> None:
        """Mark the credential at `index` revoked in this broker's status list."""
        await self._call(self._redis.setbit(self._keys.fed_status, index, 1))

    async def status_bits(self) -> bytes:
        """This broker's revocation bitstring as stored (unpadded)."""
        raw = await self._call(self._redis.get(self._keys.fed_status))
        return bytes(raw or b"")

    async def store_list(self, issuer: str, list_id: str, value: dict[str, Any]) -> bool:
        """Keep an issuer's verified status list unless a newer one is stored."""
        args = [f"{issuer}|{list_id}", value["valid_from_ms"], orjson.dumps(value)]
        return bool(await self._call(self._store_list(keys=[self._keys.fed_lists], args=args)))

    async def presented_list(self, issuer: str, list_id: str) -> dict[str, Any] | None:
        """A status list stored by `store_list`, or None."""
        raw = await self._call(self._redis.hget(self._keys.fed_lists, f"{issuer}|{list_id}"))
        return None if raw is None else dict(orjson.loads(raw))

    async def track_entry(self, issuer: str, list_id: str, credential_id: str, index: int) -> None:
        """Remember that an imported record is covered by the issuer's list at `index`."""
        key = self._keys.fed_entries(f"{issuer}|{list_id}")
        await self._call(self._redis.hset(key, credential_id, index))

    async def entries(self, issuer: str, list_id: str) -> dict[str, int]:
        """Imported record id -> index, of the records the issuer's list covers."""
        key = self._keys.fed_entries(f"{issuer}|{list_id}")
        raw = await self._call(self._redis.hgetall(key))
        return {k.decode(): int(v) for k, v in raw.items()}
