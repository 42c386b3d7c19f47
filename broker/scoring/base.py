"""The result type every dimension returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DimensionScore:
    """A score in [0, 1] with machine-readable reason codes."""

    score: float
    reasons: tuple[str, ...] = ()
