"""What a run measured: error rates per population, the bait-and-switch clock, newcomers'
time to established, and the threshold trade-off (a what-if replay of the run's own
decision log entries through `broker.core.whatif.outcome_under`)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from efficacy_engine import DAY_MS, HOUR_MS, Sent
from efficacy_world import World

from broker.core.policy import Policy
from broker.core.whatif import outcome_under

ATTACKERS = ("fraudster", "whitewasher", "sybil", "switcher", "drip")
HONEST = ("honest", "newcomer")


def _rate(part: float, whole: float) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _after_warmup(world: World) -> list[Sent]:
    return [s for s in world.engine.sent if s.t_ms >= world.warmup_end_ms]


def measure(world: World, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Every figure docs/EFFICACY.md reports, from one run."""
    measured_sent = _after_warmup(world)
    return {
        "populations": _populations(measured_sent),
        "honest": _honest(measured_sent),
        "attacks": _attacks(measured_sent),
        "switchers": _switchers(world),
        "newcomers": _newcomers(world),
        "sybils": _never_probation(world, ("sybil",)),
        "whitewash": _never_probation(world, ("whitewasher",), fresh_only=True),
        "slander": _slander(world, measured_sent),
        "splitters": _splitters(world, measured_sent),
        "samples": samples,
    }


def _populations(sent: list[Sent]) -> dict[str, dict[str, Any]]:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for s in sent:
        row = table[s.sender.population]
        row["sent"] += 1
        row[s.action] += 1
        if s.kind == "payment":
            row["payments"] += 1
            row[f"payment_{s.action}"] += 1
    return {name: dict(row) for name, row in sorted(table.items())}


def _honest(sent: list[Sent]) -> dict[str, Any]:
    honest = [s for s in sent if s.sender.population == "honest" and not s.malicious]
    payments = [s for s in honest if s.kind == "payment"]
    blocked = [s for s in honest if s.action == "block"]
    return {
        "messages": len(honest),
        "false_block_rate": _rate(len(blocked), len(honest)),
        "blocked_by_reason": dict(Counter(s.reason for s in blocked)),
        "payments": len(payments),
        "payment_escalation_rate": _rate(
            sum(1 for s in payments if s.action == "escalate"), len(payments)
        ),
        "escalated_by_reason": dict(Counter(s.reason for s in payments if s.action == "escalate")),
    }


def _attacks(sent: list[Sent]) -> dict[str, Any]:
    bad = [s for s in sent if s.malicious and s.sender.population in ATTACKERS]
    pay = [s for s in bad if s.kind == "payment"]
    other = [s for s in bad if s.kind != "payment"]
    value = sum(s.value_ref_minor for s in pay)
    delivered_value = sum(s.value_ref_minor for s in pay if s.action == "deliver")
    by_population: dict[str, Any] = {}
    for name in ATTACKERS:
        mine = [s for s in bad if s.sender.population == name]
        mine_pay = [s for s in mine if s.kind == "payment"]
        by_population[name] = {
            "messages": len(mine),
            "delivered": sum(1 for s in mine if s.action == "deliver"),
            "payments": len(mine_pay),
            "payment_value_usd": sum(s.value_ref_minor for s in mine_pay) / 100,
            "payment_value_delivered_usd": sum(
                s.value_ref_minor for s in mine_pay if s.action == "deliver"
            ) / 100,
            "escalated": sum(1 for s in mine if s.action == "escalate"),
        }  # fmt: skip
    return {
        "messages": len(bad),
        "payment_success": _rate(sum(1 for s in pay if s.action == "deliver"), len(pay)),
        "payment_value_success": _rate(delivered_value, value),
        "payment_value_delivered_usd": delivered_value / 100,
        "payment_value_attempted_usd": value / 100,
        "non_payment_success": _rate(sum(1 for s in other if s.action == "deliver"), len(other)),
        "by_population": by_population,
    }


def _switchers(world: World) -> dict[str, Any]:
    turned = [a for a in world.agents if a.population == "switcher" and a.bad_sent > 0]
    lost = [a.lost_payment_tier for a in turned if a.lost_payment_tier is not None]
    return {
        "turned": len(turned),
        "lost_payment_tier": len(lost),
        "bad_messages": sorted(bad for _, bad in lost),
        "hours": sorted(round(ms / HOUR_MS, 2) for ms, _ in lost),
        "max_bad_messages": max((bad for _, bad in lost), default=None),
    }


def _newcomers(world: World) -> dict[str, Any]:
    newcomers = [a for a in world.agents if a.population == "newcomer"]
    done = [a.established_at for a in newcomers if a.established_at is not None]
    hours = [ms / HOUR_MS for ms, _ in done]
    return {
        "arrived": len(newcomers),
        "established": len(done),
        "median_hours": round(statistics.median(hours), 1) if hours else None,
        "median_messages": statistics.median(n for _, n in done) if done else None,
        "max_hours": round(max(hours), 1) if hours else None,
    }


def _never_probation(
    world: World, populations: tuple[str, ...], *, fresh_only: bool = False
) -> dict[str, Any]:
    """Keys of these populations, and how many ever had a message decided above blocked."""
    keys = [a for a in world.agents if a.population in populations]
    if fresh_only:
        keys = world.whitewash_keys
    above = {s.sender.did for s in world.engine.sent
             if s.sender in keys and s.tier != "blocked"}  # fmt: skip
    return {"keys": len(keys), "reached_probation": len(above)}


def _slander(world: World, sent: list[Sent]) -> dict[str, Any]:
    """Slander targets, judged by what the broker decided on their own messages."""
    targets = {a.did for agents in world.slander_targets.values() for a in agents}
    lowest: dict[str, float] = {}
    below: set[str] = set()
    held = 0
    for s in sent:
        if s.sender.did in targets and s.composite is not None and s.kind != "report":
            lowest[s.sender.did] = min(lowest.get(s.sender.did, 1.0), s.composite)
            below |= {s.sender.did} if s.tier == "blocked" else set()
            held += s.reason == "payment_hold"
    return {"targets": len(targets), "pushed_below_probation": len(below),
            "lowest_composite": round(min(lowest.values()), 4) if lowest else None,
            "payments_held": held}  # fmt: skip


def _splitters(world: World, sent: list[Sent]) -> dict[str, Any]:
    daily: Counter[tuple[str, int]] = Counter()
    for s in sent:
        if s.sender.population == "splitter" and s.kind == "payment" and s.action == "deliver":
            daily[(s.sender.name, (s.t_ms - world.engine.start_ms) // DAY_MS)] += s.value_ref_minor
    cap = world.engine.policy.caps.established_per_day
    # A rolling 24 h cap can let up to twice the cap land within one calendar day.
    return {"max_delivered_per_day_usd": max(daily.values(), default=0) / 100,
            "daily_cap_usd": cap}  # fmt: skip


def tradeoff(world: World) -> list[dict[str, Any]]:
    """False blocks against attack success as the tier thresholds move together, replaying
    the run's decision log entries (no feedback: reports would have differed)."""
    entries = [s for s in _after_warmup(world) if s.entry and s.kind != "report"]
    base = world.engine.policy
    rows = []
    for shift in (-0.10, -0.05, -0.025, 0.0, 0.025, 0.05, 0.10):
        thresholds = base.thresholds.model_copy(update={
            "probation": round(base.thresholds.probation + shift, 4),
            "established": round(base.thresholds.established + shift, 4),
            "trusted": round(min(0.99, base.thresholds.trusted + shift), 4),
        })  # fmt: skip
        policy = base.model_copy(update={"thresholds": thresholds})
        rows.append({"shift": shift, **_replayed(entries, policy)})
    return rows


def _replayed(entries: list[Sent], policy: Policy) -> dict[str, Any]:
    honest = blocked = bad = bad_delivered = bad_value = bad_value_delivered = 0
    for s in entries:
        action = outcome_under(s.entry, policy)[0]
        if s.sender.population == "honest" and not s.malicious:
            honest += 1
            blocked += action == "block"
        elif s.malicious and s.sender.population in ATTACKERS:
            bad += 1
            bad_delivered += action == "deliver"
            if s.kind == "payment":
                bad_value += s.value_ref_minor
                bad_value_delivered += s.value_ref_minor if action == "deliver" else 0
    return {
        "probation": policy.thresholds.probation,
        "honest_false_block_rate": _rate(blocked, honest),
        "attack_success": _rate(bad_delivered, bad),
        "attack_payment_value_success": _rate(bad_value_delivered, bad_value),
    }


def check_targets(measured: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets after warm-up, with the default policy."""
    honest, attacks, switchers = measured["honest"], measured["attacks"], measured["switchers"]

    def row(name: str, value: Any, target: str, ok: bool) -> dict[str, Any]:
        return {"name": name, "value": value, "target": target, "ok": ok}

    lost_all = switchers["lost_payment_tier"] == switchers["turned"]
    return [
        row("honest false-block rate", honest["false_block_rate"], "<= 0.01",
            (honest["false_block_rate"] or 0) <= 0.01),
        row("honest payment escalation", honest["payment_escalation_rate"], "<= 0.05",
            (honest["payment_escalation_rate"] or 0) <= 0.05),
        row("attack payment value delivered", attacks["payment_value_success"], "<= 0.01",
            (attacks["payment_value_success"] or 0) <= 0.01),
        row("bait-and-switch: bad messages to lose the payment tier",
            switchers["max_bad_messages"], "<= 5, every switcher",
            lost_all and (switchers["max_bad_messages"] or 0) <= 5),
        row("sybil keys reaching probation", measured["sybils"]["reached_probation"], "0",
            measured["sybils"]["reached_probation"] == 0),
        row("whitewashed keys reaching probation", measured["whitewash"]["reached_probation"],
            "0", measured["whitewash"]["reached_probation"] == 0),
        row("honest agents slandered below probation",
            measured["slander"]["pushed_below_probation"], "0",
            measured["slander"]["pushed_below_probation"] == 0),
    ]  # fmt: skip
