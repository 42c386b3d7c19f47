"""Behavioral: confidence that the sender behaves like its own baseline.

A new sender has no baseline yet (prior 0.5); clean messages build one quickly. A detected
anomaly puts the sender under observation: the dimension is 0 until both the observation
period has passed and enough clean messages have arrived since, and then the baseline
restarts from the prior, so recovery takes clean behaviour over time.
"""

from __future__ import annotations

import math

from broker.core.envelope import Envelope
from broker.core.policy import Policy
from broker.core.scoring.base import DimensionScore
from broker.core.state import PeerState, TrustContext


def score_behavioral(
    env: Envelope, ctx: TrustContext, policy: Policy, now_ms: int
) -> DimensionScore:
    """Score how settled and anomaly-free the sender's behaviour is."""
    model = policy.behavior
    peer = ctx.peer
    if under_observation(peer, policy, now_ms):
        return DimensionScore(0.0, ("under_observation",))
    score = 1.0 - (1.0 - model.prior) * math.exp(-peer.clean_streak / model.baseline_messages)
    reasons = ("behavior_no_baseline",) if peer.clean_streak == 0 else ()
    return DimensionScore(score, reasons)


def under_observation(peer: PeerState, policy: Policy, now_ms: int) -> bool:
    """True while a recent anomaly has not yet been outlived by clean behaviour."""
    if peer.last_anomaly_ms is None:
        return False
    model = policy.behavior
    waited = now_ms - peer.last_anomaly_ms >= model.observation_ms
    return not (waited and peer.clean_streak >= model.observation_clean_messages)
