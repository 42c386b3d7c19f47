"""The behaviour detectors: is a sender's latest message an anomaly? (pure)

The store counts every committed message in its sender's windows, atomically and for all
routers at once (broker/store/lua/finish.lua): messages this minute against an EWMA of
past minutes, recipients never messaged before this hour, payload size against an EWMA
of the sender's sizes, gate failures and messages outside the sender's own manifest per
window. It hands those counts back as `Counts`; `detect` judges them here. An anomaly
puts the sender under observation (its behaviour dimension drops to 0 until it has been
clean for a while, broker/core/scoring/behavioral.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from broker.core.policy import BehaviorModel


@dataclass(frozen=True, slots=True)
class Counts:
    """Where a sender's windows stand once its latest message is counted."""

    # Messages in the current minute, this one included; minutes (and their EWMA) behind
    # the sender's own per-minute baseline.
    minute_messages: int = 0
    baseline_minutes: int = 0
    minute_ewma: float = 0.0
    # Whether this message went to a recipient the sender never messaged before, and how
    # many new recipients it has reached this hour.
    new_recipient: bool = False
    new_recipients_hour: int = 0
    # This message's size, and the sender's sizes before it (how many, their EWMA).
    size: int = 0
    sizes_seen: int = 0
    size_ewma: float = 0.0
    # Gate failures and messages outside the manifest this window, this one included
    # (0 unless this one failed a gate / is outside the manifest).
    gate_failures: int = 0
    outside_manifest: int = 0


def velocity_spike(counts: Counts, model: BehaviorModel) -> bool:
    """Far more messages this minute than the sender's own per-minute baseline (once it
    has one), and more than the floor."""
    limit = max(model.rate_floor_per_minute, model.rate_spike_factor * counts.minute_ewma)
    return counts.baseline_minutes >= model.baseline_minutes and counts.minute_messages > limit


def fan_out(counts: Counts, model: BehaviorModel) -> bool:
    """More recipients never messaged before, this hour, than the limit."""
    return counts.new_recipient and counts.new_recipients_hour > model.new_recipients_per_hour


def payload_drift(counts: Counts, model: BehaviorModel) -> bool:
    """A message far larger than the sender's usual size (once it has a usual size)."""
    limit = max(model.size_floor_bytes, model.size_factor * counts.size_ewma)
    return counts.sizes_seen >= model.size_baseline_messages and counts.size > limit


def gate_failures(counts: Counts, model: BehaviorModel) -> bool:
    """Repeated gate failures within one window (counted only when this message failed
    one; the limit is at least 1)."""
    return counts.gate_failures >= model.gate_failure_limit


def capability_drift(counts: Counts, model: BehaviorModel) -> bool:
    """Repeated messages of kinds outside the sender's own manifest within one window."""
    return counts.outside_manifest >= model.outside_manifest_limit


# In order: when several trip at once, the last one named is the reason recorded.
DETECTORS: tuple[tuple[str, Callable[[Counts, BehaviorModel], bool]], ...] = (
    ("velocity_spike", velocity_spike),
    ("fan_out", fan_out),
    ("payload_drift", payload_drift),
    ("gate_failures", gate_failures),
    ("capability_drift", capability_drift),
)


def detect(counts: Counts, model: BehaviorModel) -> str:
    """The anomaly these counts show ('' for none)."""
    found = ""
    for name, tripped in DETECTORS:
        if tripped(counts, model):
            found = name
    return found
