"""Human review records (broker/workflow.py): the one final decision on a trace and its
log, escalations waiting for evidence, and where a blocked message's record is on the
blocked stream. Review records are the audit trail of human decisions: kept 400 days."""

from __future__ import annotations

from typing import Any

import orjson

from broker.store.base import StoreBase, as_bytes

_REVIEW_MS = 400 * 86_400_000


class Reviews(StoreBase):
    """Review claims (lua/claim_review.lua, abandon_review.lua), logs and escalations."""

    async def claim_review(
        self,
        trace_id: str,
        record: dict[str, Any],
        *,
        take_over_pending: bool,
        replaces: str = "",
    ) -> dict[str, Any] | None:
        """Record the one final review decision on a trace: None when this call claimed it,
        else the decision already recorded. `take_over_pending` lets a claim left 'pending'
        by an interrupted reviewer be replaced (only safe while holding the message);
        `replaces` names an action a new decision may supersede (e.g. 'expire')."""
        payload = orjson.dumps(record).decode()
        args: list[str | int] = [payload, int(take_over_pending), _REVIEW_MS, replaces]
        script = self._lua("claim_review")
        current = await self._call(script(keys=[self.keys.review(trace_id)], args=args))
        return None if current is None else dict(orjson.loads(current))

    async def finish_review(self, trace_id: str, record: dict[str, Any]) -> None:
        """Overwrite a claimed review with its final state (the action was committed)."""
        key = self.keys.review(trace_id)
        await self._call(self._redis.set(key, orjson.dumps(record), px=_REVIEW_MS))

    async def abandon_review(self, trace_id: str, token: str) -> None:
        """Drop a claim whose action never happened, unless another claim replaced it."""
        script = self._lua("abandon_review")
        await self._call(script(keys=[self.keys.review(trace_id)], args=[token]))

    async def review(self, trace_id: str) -> dict[str, Any] | None:
        """The final review decision recorded on a trace, if any."""
        raw = await self._call(self._redis.get(self.keys.review(trace_id)))
        return None if raw is None else dict(orjson.loads(raw))

    async def log_review(self, trace_id: str, entry: dict[str, Any]) -> None:
        """Append one entry to a trace's review log (the newest 100 are kept)."""
        key = self.keys.review_log(trace_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, orjson.dumps(entry))
            pipe.ltrim(key, -100, -1)
            pipe.pexpire(key, _REVIEW_MS)
            await self._call(pipe.execute())

    async def review_log(self, trace_id: str) -> list[dict[str, Any]]:
        """Every logged review action on a trace, oldest first."""
        raw = await self._call(self._redis.lrange(self.keys.review_log(trace_id), 0, -1))
        return [dict(orjson.loads(item)) for item in raw]

    async def await_evidence(self, trace_id: str, request: dict[str, Any]) -> None:
        """Mark an escalation as waiting for evidence from its sender."""
        key = self.keys.awaiting_evidence
        await self._call(self._redis.hset(key, trace_id, orjson.dumps(request)))

    async def awaiting_evidence(self) -> dict[str, dict[str, Any]]:
        """Escalations waiting for evidence: trace id -> the request."""
        raw = await self._call(self._redis.hgetall(self.keys.awaiting_evidence))
        return {k.decode(): dict(orjson.loads(v)) for k, v in as_bytes(raw).items()}

    async def stop_awaiting_evidence(self, *trace_ids: str) -> None:
        """The escalations were decided: stop re-scoring them."""
        if trace_ids:
            await self._call(self._redis.hdel(self.keys.awaiting_evidence, *trace_ids))

    async def blocked_offset(self, trace_id: str) -> int | None:
        """Where on the blocked stream a reader last found the record of `trace_id`."""
        raw = await self._call(self._redis.get(self.keys.blocked_offset(trace_id)))
        return None if raw is None else int(raw)

    async def remember_blocked_offset(self, trace_id: str, offset: int) -> None:
        """Remember where the record of `trace_id` is on the blocked stream (a hint: the
        reader checks the record it finds there)."""
        key = self.keys.blocked_offset(trace_id)
        await self._call(self._redis.set(key, str(offset), px=_REVIEW_MS))
