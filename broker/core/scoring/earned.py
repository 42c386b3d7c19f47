"""What a peer earned from its own outcomes: the reputation formula that the reputation
score, a voucher's standing and every imported record apply alike (pure)."""

from __future__ import annotations

from broker.core.policy import ReputationModel
from broker.core.state import DecayedCount


def earned(
    successes: DecayedCount, failures: DecayedCount, model: ReputationModel, now_ms: int
) -> float:
    """Reputation from a peer's own outcomes alone."""
    s = successes.at(now_ms, model.success_half_life_ms)
    f = failures.at(now_ms, model.failure_half_life_ms)
    base = model.prior + (model.ceiling - model.prior) * s / (s + model.half_saturation)
    return base * failure_penalty(f, s, model)


def failure_penalty(failures: float, successes: float, model: ReputationModel) -> float:
    """failure_multiplier ** (failures / (1 + successes / half_saturation)): the weight of
    a failure shrinks as verified successes grow (11 successes halve it)."""
    penalty: float = model.failure_multiplier ** (
        failures / (1.0 + successes / model.half_saturation)
    )
    return penalty
