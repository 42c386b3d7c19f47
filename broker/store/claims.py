"""A message's life in the store: its claim when the router first sees it, handing the
claim between router sessions, and the finish once its outcome is committed (which also
moves the sender's behaviour windows and writes the decision log and flight recorder)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import orjson

from broker.core.behavior import Counts, detect
from broker.core.envelope import Envelope
from broker.core.policy import Policy
from broker.core.reports import domain_of
from broker.core.state import PeerState
from broker.store.base import StoreBase, text
from broker.store.batch import Command


class Claim(StrEnum):
    """What the store knows about a message id when the router first sees it."""

    NEW = "new"  # never seen: process it
    RETRY = "retry"  # our own redelivery after a crash before its outcome was recorded
    DONE = "done"  # the same bytes again, outcome already committed: ack only
    COPY = "copy"  # the same bytes published again while the first copy is in flight
    REPLAY = "replay"  # the id or nonce was used before by a different message: block it


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claim, and for a retry when the message was first claimed and who holds it."""

    claim: Claim
    first_ms: int | None = None
    holder: str = ""


class HandOver(StrEnum):
    """What became of a pending claim the router tried to hand over (lua/hand_over.lua)."""

    OK = "ok"  # handed over (or, asked only, still held by the expected holder)
    DONE = "done"  # its outcome was committed meanwhile
    GONE = "gone"  # the claim expired
    REPLAY = "replay"  # the id is claimed by different bytes
    HELD = "held"  # another session holds it now


@dataclass(frozen=True, slots=True)
class HandedOver:
    """A hand-over's answer; for HELD, the session that holds the claim now."""

    state: HandOver
    holder: str = ""


@dataclass(frozen=True)
class Finish:
    """What the router reports to the store once an outcome is committed."""

    # deliver, block or escalate (kept in the claim with the recipient).
    action: str
    clean: bool
    delivered: bool
    size: int
    gate_failed: bool
    outside_manifest: bool
    trace_id: str = ""
    entry: bytes = b"{}"
    trace: bytes = b"{}"


class Claims(StoreBase):
    """Claims, hand-overs and finishes (lua/claim.lua, hand_over.lua, finish.lua).

    The claim decides by the bytes, not by who sent them twice. Publishing the identical
    bytes again (a producer retrying after a lost confirm) is idempotent: while the first
    copy is in flight (`pending`) that copy is still on its queue or already committed, so
    this one is dropped (`copy`); once done, every copy is `done`. Only RabbitMQ's own
    redelivery of the claimed copy (`redelivered`) may route it again (`retry`), and only
    once its holder (the router session that claimed it) can no longer commit it
    (broker/amqp/indoubt.py). A different message reusing the id or the nonce is a `replay`.
    The pending record keeps when the message was first claimed: a retry is judged as of
    then, so time the broker lost (a paused router, a failover) is never clock skew.
    """

    async def claim(self, env: Envelope, digest: str, redelivered: bool) -> Claim:
        """Claim a message id and nonce atomically (dedup after crashes, replay defence)."""
        claimed = await self.claim_at(env, digest, redelivered, int(time.time() * 1000))
        return claimed.claim

    async def claim_at(
        self, env: Envelope, digest: str, redelivered: bool, now_ms: int, holder: str = ""
    ) -> Claimed:
        """The claim for `holder` (a router session); for a retry also the time the
        message was first claimed and the session holding it (if known)."""
        keys = [self.keys.seen(env.id), self.keys.nonce(env.sender, env.nonce)]
        args: list[str | int] = [
            digest, self._dedup_ttl_ms, "1" if redelivered else "0", now_ms, holder,
        ]  # fmt: skip
        raw = await self._replicated_eval(Command.eval(self._lua("claim"), keys, args))
        state, _, rest = text(raw).partition("|")
        first, _, previous = rest.partition("|")
        return Claimed(Claim(state), int(first) if first else None, previous)

    async def hand_over(
        self, env: Envelope, digest: str, expected: str, holder: str
    ) -> HandedOver:
        """Move a pending claim from `expected` to `holder` ('' releases it); with
        `holder` == `expected`, only say whether `expected` still holds it."""
        args = [digest, expected, holder]
        command = Command.eval(self._lua("hand_over"), [self.keys.seen(env.id)], args)
        state, _, now_held_by = text(await self._replicated_eval(command)).partition("|")
        return HandedOver(HandOver(state), now_held_by)

    async def _replicated_eval(self, command: Command) -> Any:
        if self._replicated:
            # Replication is asynchronous: a claim the master acknowledged but had not yet
            # passed on would vanish in a failover, and an identical copy could then be
            # routed a second time. WAIT (in the same pipeline) holds the reply until the
            # replica has it too, or 100 ms passed (a replica that is down slows, never stops).
            raw, _ = await self._together(command, Command.plain("WAIT", 1, 100))
            return raw
        return await self._call(self._auto.run(command))

    async def finish(
        self, env: Envelope, digest: str, result: Finish, policy: Policy, now_ms: int
    ) -> str:
        """Record a committed outcome and the sender's behaviour; returns the anomaly that
        put the sender under observation, or ''."""
        keys = [
            self.keys.seen(env.id),
            self.keys.peer(env.sender),
            self.keys.delivered(env.id),
            self.keys.known_recipients(env.sender),
            self.keys.decisions,
            self.keys.trace(result.trace_id),
            self.keys.trace_of(env.id),
        ]
        delivered = f"{env.sender}|{env.recipient}|{now_ms}|{domain_of(env)}"
        message = {
            "digest": digest,
            "outcome": f"{result.action}|{env.recipient}",
            "clean": result.clean,
            "delivered": delivered if result.delivered else "",
            "now_ms": now_ms,
            "size": result.size,
            "recipient": env.recipient,
            "gate_failed": result.gate_failed,
            "outside_manifest": result.outside_manifest,
            "trace_id": result.trace_id,
            "window_ms": policy.behavior.window_ms,
            "report_window_ms": policy.reports.window_ms,
            "trace_ttl_ms": self._trace_ttl_ms,
            "decision_log_max": self._decision_log_max,
        }
        args = [orjson.dumps(message), result.entry, result.trace]
        raw = await self._call(self._auto.run(Command.eval(self._lua("finish"), keys, args)))
        anomaly = detect(counts_of(raw, result.size), policy.behavior)
        if anomaly:
            # Under observation from now: every router hears of it at once (invalidation).
            await self._call(
                self._redis.hset(
                    keys[1], mapping={"anomaly": now_ms, "clean": 0, "anomaly_reason": anomaly}
                )
            )
            await self.invalidate(f"peer:{env.sender}")
        elif result.clean:
            # Only the clean streak moved: bump our cached copy as Redis did rather than
            # read the peer again on its next message; other routers catch up when their
            # entry expires.
            self._peers.update(env.sender, _one_more_clean)
        return anomaly

    async def outcome(self, message_id: str) -> str | None:
        """The recorded '<digest>|<state>[|outcome]' for a message id, if any."""
        raw = await self._call(self._redis.get(self.keys.seen(message_id)))
        return None if raw is None else text(raw)


def counts_of(raw: Any, size: int) -> Counts:
    """finish.lua's reply (see its header) as the detectors' Counts."""
    rate_n, minutes, rate_ewma, new, fan_new, size_n, size_ewma, gf_n, od_n = raw
    return Counts(
        minute_messages=int(rate_n), baseline_minutes=int(minutes),
        minute_ewma=float(text(rate_ewma)), new_recipient=bool(int(new)),
        new_recipients_hour=int(fan_new), size=size, sizes_seen=int(size_n),
        size_ewma=float(text(size_ewma)), gate_failures=int(gf_n), outside_manifest=int(od_n),
    )  # fmt: skip


def _one_more_clean(peer: PeerState) -> PeerState:
    return replace(peer, clean_streak=peer.clean_streak + 1)
