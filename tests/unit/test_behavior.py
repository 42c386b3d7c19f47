"""broker/core/behavior.py: the five behaviour detectors at their boundaries, as a table."""

from __future__ import annotations

import pytest

from broker.core.behavior import DETECTORS, Counts, detect
from broker.core.policy import BehaviorModel

MODEL = BehaviorModel()  # floor 120/min, x5 EWMA after 3 minutes; 25 new recipients/h;
# x10 size over 16 KiB after 10 messages; 5 gate failures, 3 outside the manifest


@pytest.mark.parametrize(
    ("counts", "anomaly"),
    [
        pytest.param(Counts(), "", id="nothing-counted"),
        # velocity: over max(floor, factor x EWMA), once the baseline has enough minutes
        pytest.param(Counts(minute_messages=121, baseline_minutes=3), "velocity_spike",
                     id="velocity-over-the-floor"),
        pytest.param(Counts(minute_messages=120, baseline_minutes=3), "",
                     id="velocity-at-the-floor"),
        pytest.param(Counts(minute_messages=500, baseline_minutes=2), "",
                     id="velocity-without-a-baseline"),
        pytest.param(Counts(minute_messages=250, baseline_minutes=5, minute_ewma=50.0), "",
                     id="velocity-at-five-times-its-own-rate"),
        pytest.param(Counts(minute_messages=251, baseline_minutes=5, minute_ewma=50.0),
                     "velocity_spike", id="velocity-over-five-times-its-own-rate"),
        # fan-out: counted only when this message went to a new recipient
        pytest.param(Counts(new_recipient=True, new_recipients_hour=26), "fan_out",
                     id="fan-out-over-the-limit"),
        pytest.param(Counts(new_recipient=True, new_recipients_hour=25), "",
                     id="fan-out-at-the-limit"),
        pytest.param(Counts(new_recipient=False, new_recipients_hour=40), "",
                     id="fan-out-to-a-known-recipient"),
        # payload drift: over max(floor, factor x EWMA) once the sender has a usual size
        pytest.param(Counts(size=16_385, sizes_seen=10, size_ewma=100.0), "payload_drift",
                     id="size-over-the-floor"),
        pytest.param(Counts(size=16_384, sizes_seen=10, size_ewma=100.0), "",
                     id="size-at-the-floor"),
        pytest.param(Counts(size=1_000_000, sizes_seen=9, size_ewma=100.0), "",
                     id="size-without-a-baseline"),
        pytest.param(Counts(size=50_000, sizes_seen=10, size_ewma=5_000.0), "",
                     id="size-at-ten-times-its-usual"),
        pytest.param(Counts(size=50_001, sizes_seen=10, size_ewma=5_000.0), "payload_drift",
                     id="size-over-ten-times-its-usual"),
        # repeated gate failures and capability drift, per window
        pytest.param(Counts(gate_failures=5), "gate_failures", id="fifth-gate-failure"),
        pytest.param(Counts(gate_failures=4), "", id="fourth-gate-failure"),
        pytest.param(Counts(outside_manifest=3), "capability_drift", id="third-outside-manifest"),
        pytest.param(Counts(outside_manifest=2), "", id="second-outside-manifest"),
        # several at once: the last detector named is the reason recorded
        pytest.param(Counts(minute_messages=121, baseline_minutes=3, gate_failures=5),
                     "gate_failures", id="velocity-and-gate-failures"),
        pytest.param(Counts(new_recipient=True, new_recipients_hour=26, outside_manifest=3),
                     "capability_drift", id="fan-out-and-capability-drift"),
    ],
)  # fmt: skip
def test_detect(counts: Counts, anomaly: str) -> None:
    assert detect(counts, MODEL) == anomaly


def test_each_detector_reads_its_limits_from_the_policy() -> None:
    strict = BehaviorModel(
        rate_floor_per_minute=10, baseline_minutes=1, new_recipients_per_hour=2,
        size_floor_bytes=100, size_baseline_messages=1, gate_failure_limit=1,
        outside_manifest_limit=1,
    )  # fmt: skip
    cases = {
        "velocity_spike": Counts(minute_messages=11, baseline_minutes=1),
        "fan_out": Counts(new_recipient=True, new_recipients_hour=3),
        "payload_drift": Counts(size=101, sizes_seen=1, size_ewma=1.0),
        "gate_failures": Counts(gate_failures=1),
        "capability_drift": Counts(outside_manifest=1),
    }
    assert sorted(cases) == sorted(name for name, _ in DETECTORS)
    for name, counts in cases.items():
        assert detect(counts, strict) == name
        assert detect(counts, MODEL) == ""  # the default limits are far looser
