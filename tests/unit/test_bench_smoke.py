"""The decision benchmark still runs (no timing is asserted: that is what the numbers are for)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

BENCH = Path(__file__).resolve().parents[2] / "bench" / "decision.py"


def test_decision_benchmark_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "decision.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "scenario" in done.stdout
    assert "p50 ms" in done.stdout and "p99 ms" in done.stdout
    report = orjson.loads(out.read_bytes())
    assert set(report["scenarios"]) == {"full", "no-verify", "decide"}
    assert all(stats["n"] == 2_000 for stats in report["scenarios"].values())
