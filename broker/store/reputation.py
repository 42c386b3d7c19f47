"""A peer's reputation: verified outcomes folded into its decayed success and failure
counts (lua/decay.lua's rule, which is broker/core/state.py DecayedCount's), outcome reports
capped per counterparty organisation and corroborated when serious, vouchers billed for
the damage, and key rotation carrying the history over."""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.envelope import MESSAGE_KINDS
from broker.core.policy import Policy
from broker.core.reports import Report, failure_units
from broker.core.state import Vouch
from broker.store import codec
from broker.store.base import StoreBase, as_bytes, text


@dataclass(frozen=True)
class ReportEffect:
    """What a report changed: the success weight or failure units it added after the
    per-organisation caps, and for a high or critical report the corroboration state:
    'corroborated' (enough independent organisations agree: act now), 'again' (already
    acted on within the window), 'pending' (a security reviewer decides) or ''."""

    added: float
    serious: str = ""


class Reputation(StoreBase):
    """Decayed outcome counts, reports and vouchers' liability (lua/add_decayed.lua,
    add_capped.lua, claim_report.lua, corroborate.lua, rotate_key.lua)."""

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
    ) -> str:
        """'ok|<kind of the reported message>' once for the recipient of a delivered
        message, else the refusal code."""
        keys = [self.keys.delivered(message_id), self.keys.reported(message_id)]
        args: list[str | int] = [reporter, subject, policy.reports.window_ms]
        return text(await self._call(self._lua("claim_report")(keys=keys, args=args)))

    async def apply_report(
        self,
        subject: str,
        reporter: str,
        report: Report,
        weight: float,
        policy: Policy,
        now_ms: int,
        *,
        domain: str = "",
        reporter_org: str,
        subject_org: str | None,
    ) -> ReportEffect:
        """Fold a verified report into the subject's reputation (and its vouchers'),
        capped per counterparty organisation; `domain` is the kind of the reported
        message. A high or critical report acts beyond its capped units only when
        corroborated by independent organisations; otherwise it waits for a reviewer."""
        if weight <= 0:
            return ReportEffect(0.0)
        if report.success:
            if reporter_org == subject_org:
                return ReportEffect(0.0)  # an organisation's praise of its own agents
            added = await self._capped_add(
                subject, self.keys.report_pairs(subject), reporter_org, weight, now_ms,
                policy.reputation.success_half_life_ms, policy.reports.pair_success_cap,
                codec.SUCCESS_VALUE, codec.SUCCESS_AT,
            )  # fmt: skip
            return ReportEffect(added)
        fields: list[str] = [codec.FAILURE_VALUE, codec.FAILURE_AT]
        if domain in MESSAGE_KINDS:
            # Failures also count against the peer in the domain they happened in.
            fields += codec.domain_failure_fields(domain)
        added = await self._capped_add(
            subject, self.keys.report_blame(subject), reporter_org,
            failure_units(report, policy) * weight, now_ms, policy.reputation.failure_half_life_ms,
            policy.reports.pair_failure_cap, *fields,
        )  # fmt: skip
        await self._bill_vouchers(subject, added, policy, now_ms)
        if report.severity not in ("high", "critical"):
            return ReportEffect(added)
        reports = policy.reports
        args: list[str | int] = [
            reporter_org, now_ms, reports.corroboration_window_ms, reports.corroboration,
        ]  # fmt: skip
        keys = [self.keys.serious_orgs(subject)]
        outcome = await self._call(self._lua("corroborate")(keys=keys, args=args))
        return ReportEffect(added, text(outcome))

    async def _capped_add(
        self, subject: str, pairs: str, org: str, amount: float, now_ms: int, half_life: int,
        cap: float, *fields: str,
    ) -> float:  # fmt: skip
        args: list[str | int | float] = [org, amount, now_ms, half_life, cap, *fields]
        script = self._lua("decay", "add_capped")
        added = float(await self._call(script(keys=[self.keys.peer(subject), pairs], args=args)))
        if added > 0:
            await self.invalidate(f"peer:{subject}")
        return added

    async def _bill_vouchers(self, subject: str, units: float, policy: Policy, now_ms: int) -> None:
        """Vouching is not free: each voucher answers for a share of the damage."""
        for vouch in await self._raw_vouches(subject):
            cost = units * min(vouch.share, policy.vouching.max_share) * policy.vouching.liability
            if cost > 0 and vouch.expires_at_ms > now_ms:
                await self.add_outcome(
                    vouch.voucher, success=False, weight=cost, now_ms=now_ms, policy=policy
                )

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
