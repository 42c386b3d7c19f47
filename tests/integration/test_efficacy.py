"""The efficacy simulation's small run (bench/efficacy.py --scale ci) meets every target of
docs/EFFICACY.md, through the broker's real decision path on the suite's Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from broker.config import BrokerConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_the_small_efficacy_run_meets_every_target(
    base_config: BrokerConfig, tmp_path: Path
) -> None:
    out = tmp_path / "efficacy.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "efficacy.py"), "--scale", "ci", "--seed", "7",
         "--check", "--redis-url", base_config.redis_url, "--json", str(out)],
        capture_output=True, text=True, timeout=880, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    report = orjson.loads(out.read_bytes())
    failed = [t for t in report["targets"] if not t["ok"]]
    assert done.returncode == 0 and not failed, (failed, done.stdout[-2000:], done.stderr[-2000:])
    # The run measured something: every population sent, and attacks were tried.
    assert report["attacks"]["messages"] > 100 and report["honest"]["messages"] > 500
    assert report["switchers"]["turned"] >= 1 and report["sybils"]["keys"] >= 10
