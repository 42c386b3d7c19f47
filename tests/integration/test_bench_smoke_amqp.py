"""The AMQP benchmarks still run: each program's --quick mode against the suite's servers.

No timing is asserted (that is what the numbers are for); each run must finish, print
its table and write JSON with the expected shape.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from broker.config import BrokerConfig

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_quick(program: str, config: BrokerConfig, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """Run bench/<program> --quick on the suite's servers; return stdout and the JSON."""
    out = tmp_path / f"{program}.json"
    env = {
        **os.environ,
        "TRUST_AMQP_URL": config.amqp_url,
        "TRUST_REDIS_URL": config.redis_url,
        "TRUST_MANAGEMENT_URL": config.management_url,
    }
    done = subprocess.run(
        [sys.executable, str(BENCH / program), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout, orjson.loads(out.read_bytes())


@pytest.mark.timeout(110)
def test_throughput_quick(base_config: BrokerConfig, tmp_path: Path) -> None:
    stdout, report = run_quick("throughput.py", base_config, tmp_path)
    assert "msg/s (median)" in stdout
    paths = [row["path"] for row in report["summary"]]
    assert paths == ["raw-confirm", "raw-tx", "router"]
    assert all(row["median_per_second"] > 0 for row in report["summary"])
    assert report["summary"][2]["ratio_vs_raw-confirm"] > 0


@pytest.mark.timeout(110)
def test_latency_quick(base_config: BrokerConfig, tmp_path: Path) -> None:
    stdout, report = run_quick("latency.py", base_config, tmp_path)
    assert "p50 added" in stdout
    rows = {row["path"]: row for row in report["summary"]}
    assert set(rows) == {"raw-confirm", "raw-tx", "router"}
    assert all(row["n"] == 100 for row in rows.values())


@pytest.mark.timeout(110)
def test_handshake_quick(base_config: BrokerConfig, tmp_path: Path) -> None:
    stdout, report = run_quick("handshake.py", base_config, tmp_path)
    assert "warm" in stdout and "cold" in stdout
    assert report["summary"]["cold"]["n"] == 10
    assert report["summary"]["warm"]["p50_ms"] > 0


@pytest.mark.timeout(110)
def test_state_quick(base_config: BrokerConfig, tmp_path: Path) -> None:
    stdout, report = run_quick("state.py", base_config, tmp_path)
    assert "Redis B/peer" in stdout
    assert [row["peers"] for row in report["populations"]] == [2_000, 5_000]
    assert all(row["redis_bytes_per_peer"] > 0 for row in report["populations"])
    # 200 messages are too few for a stable used_memory difference: only the shape counts.
    assert isinstance(report["redis_bytes_per_routed_message"], int)


@pytest.mark.timeout(110)
def test_scaleout_quick(base_config: BrokerConfig, tmp_path: Path) -> None:
    _, report = run_quick("scaleout.py", base_config, tmp_path)
    assert [row["path"] for row in report["summary"]] == ["router", "router-x2"]


@pytest.mark.timeout(110)
def test_profile_quick(base_config: BrokerConfig, tmp_path: Path) -> None:
    stdout, report = run_quick("profile_router.py", base_config, tmp_path)
    assert "where (innermost frame)" in stdout
    assert report["profiler"] in ("py-spy", "cprofile")
    assert sum(report["self_by_bucket"].values()) > 99


@pytest.mark.timeout(110)
def test_fairness_quick(base_config: BrokerConfig, tmp_path: Path) -> None:
    stdout, report = run_quick("fairness.py", base_config, tmp_path)
    assert "added p95" in stdout
    assert [row["path"] for row in report["summary"]] == ["shared", "lanes"]
    assert all(row["alone_p50_ms"] > 0 and row["flood_p95_ms"] > 0 for row in report["summary"])
