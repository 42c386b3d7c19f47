"""A peer's reputation: verified outcomes folded into its decayed success and failure
counts (lua/decay.lua's rule, which is broker/core/state.py DecayedCount's), outcome reports
counted as broker/core/report_effects.py decides (capped per counterparty organisation,
vouchers billed for the damage, corroborated when serious), and key rotation carrying the
history over."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from broker.core.envelope import MESSAGE_KINDS
from broker.core.policy import Policy
from broker.core.report_effects import CountReport, voucher_liability
from broker.core.state import Vouch
from broker.reasons import Reason
from broker.store import codec
from broker.store.base import StoreBase, as_bytes, text


@dataclass(frozen=True, slots=True)
class ReportClaim:
    """A report claimed for counting (`refusal` None) in the `domain` of the reported
    message, or refused (report_unknown_message, report_not_recipient,
    report_wrong_subject, report_duplicate)."""

    refusal: Reason | None
    domain: str = ""


class Reputation(StoreBase):
    """Decayed outcome counts, reports and vouchers' liability (lua/add_decayed.lua,
    count_report.lua, claim_report.lua, corroborate.lua, rotate_key.lua)."""

    async def add_outcome(
        self, did: str, *, success: bool, weight: float, now_ms: int, policy: Policy
    ) -> float:
        """Fold a verified outcome into the decayed success or failure count."""
        model = policy.reputation
        fields, half_life = (
            ((codec.SUCCESS_VALUE, codec.SUCCESS_AT), model.success_half_life_ms)
            if success
            else ((codec.FAILURE_VALUE, codec.FAILURE_AT), model.failure_half_life_ms)
        )
        value = await self._add_decayed(did, fields, weight, now_ms, half_life)
        await self.invalidate(f"peer:{did}")
        return float(value)

    async def add_failure(
        self, did: str, units: float, *, domain: str, now_ms: int, policy: Policy
    ) -> None:
        """Fold verified failure units into `did`'s failures and, for a known message kind,
        its failures in that domain (no per-counterparty cap: the failure is verified)."""
        await self.add_outcome(did, success=False, weight=units, now_ms=now_ms, policy=policy)
        if domain in MESSAGE_KINDS:
            fields = codec.domain_failure_fields(domain)
            half_life = policy.reputation.failure_half_life_ms
            await self._add_decayed(did, fields, units, now_ms, half_life)
            await self.invalidate(f"peer:{did}")

    async def _add_decayed(
        self, did: str, fields: tuple[str, str], amount: float, now_ms: int, half_life: int
    ) -> str:
        args: list[str | int | float] = [*fields, amount, now_ms, half_life]
        script = self._lua("decay", "add_decayed")
        return text(await self._call(script(keys=[self.keys.peer(did)], args=args)))

    async def claim_report(
        self, reporter: str, subject: str, message_id: str, policy: Policy
    ) -> ReportClaim:
        """Accept a report once, from the recipient of a delivered message about its
        sender (lua/claim_report.lua); else the refusal."""
        keys = [self.keys.delivered(message_id), self.keys.reported(message_id)]
        args: list[str | int] = [reporter, subject, policy.reports.window_ms]
        reply = text(await self._call(self._lua("claim_report")(keys=keys, args=args)))
        accepted, _, domain = reply.partition("|")
        if accepted != "ok":
            return ReportClaim(Reason(reply))
        return ReportClaim(None, domain)

    async def count_report(
        self, subject: str, reporter_org: str, count: CountReport, policy: Policy, now_ms: int
    ) -> float:
        """Apply a counted report as broker/core/report_effects.py planned it: its capped
        praise or blame and, for blame, its vouchers' liability, in one atomic step
        (lua/count_report.lua). Returns what was added to each count."""
        fields = [codec.SUCCESS_VALUE, codec.SUCCESS_AT]
        pairs = self.keys.report_pairs(subject)
        rates: dict[str, float] = {}
        if not count.praise:
            fields = [codec.FAILURE_VALUE, codec.FAILURE_AT]
            if count.domain is not None:
                fields += codec.domain_failure_fields(count.domain)
            pairs = self.keys.report_blame(subject)
            rates = voucher_liability(await self._raw_vouches(subject), policy, now_ms)
        vouchers = list(rates)
        keys = [self.keys.peer(subject), pairs, *(self.keys.peer(did) for did in vouchers)]
        report = orjson.dumps({
            "org": reporter_org, "amount": count.amount, "now_ms": now_ms,
            "half_life_ms": count.half_life_ms, "cap": count.cap, "fields": fields,
            "rates": [rates[did] for did in vouchers],
            "voucher_fields": [codec.FAILURE_VALUE, codec.FAILURE_AT],
        })  # fmt: skip
        script = self._lua("decay", "count_report")
        added = float(await self._call(script(keys=keys, args=[report])))
        if added > 0:
            for did in (subject, *vouchers):
                await self.invalidate(f"peer:{did}")
        return added

    async def corroborate(
        self, subject: str, reporter_org: str, policy: Policy, now_ms: int
    ) -> str:
        """Count a high or critical report's organisation towards corroboration: returns
        'corroborated' (enough independent organisations agree: act now), 'again'
        (already acted on within the window) or 'pending' (a reviewer decides)."""
        reports = policy.reports
        args: list[str | int] = [
            reporter_org, now_ms, reports.corroboration_window_ms, reports.corroboration,
        ]  # fmt: skip
        keys = [self.keys.serious_orgs(subject)]
        return text(await self._call(self._lua("corroborate")(keys=keys, args=args)))

    async def _raw_vouches(self, vouchee: str) -> list[Vouch]:
        raw = await self._call(self._redis.hgetall(self.keys.vouches(vouchee)))
        return [codec.vouch_from(value) for value in as_bytes(raw).values()]

    async def rotate_key(self, old: str, new: str) -> str:
        """Move history from `old` to `new` and revoke `old`, atomically.

        Returns 'ok', 'old_revoked' or 'new_in_use'.
        """
        keys = [self.keys.peer(old), self.keys.peer(new)]
        outcome = text(await self._call(self._lua("rotate_key")(keys=keys, args=[old, new])))
        if outcome == "ok":
            await self.invalidate(f"peer:{old}")
            await self.invalidate(f"peer:{new}")
        return outcome
