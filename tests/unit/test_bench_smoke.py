"""The benchmarks still run: the decision benchmark's quick mode, and the pure parts of the
AMQP benchmarks, whose quick modes need the servers (tests/integration/test_bench_smoke_amqp.py).
No timing is asserted: that is what the numbers are for."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

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


# -- the AMQP benchmarks' pure parts (their --quick runs are in tests/integration) ----------


def _bench_module(name: str) -> ModuleType:
    """Import a bench/ program as a module (they are scripts, not a package)."""
    bench = str(BENCH.parent)
    if bench not in sys.path:
        sys.path.append(bench)
    return importlib.import_module(name)


def test_profile_summary_buckets_leaf_frames_and_counts_router_functions() -> None:
    profile = _bench_module("profile_router")
    collapsed = "\n".join(
        [
            "python;Router.handle (/x/broker/router/service.py:250);"
            "verify (/s/nacl/bindings/crypto_sign.py:9) 6",
            "python;Router.handle (/x/broker/router/service.py:250);"
            "RedisStore.claim (/x/broker/store/claims.py:200);"
            "Redis.execute_command (/s/redis/asyncio/client.py:1) 3",
            "python;BaseEventLoop._run_once (/l/python3.11/asyncio/base_events.py:1) 1",
        ]
    )
    summary = profile.summarise_stacks(profile.parse_collapsed(collapsed))
    assert summary["samples"] == 10
    assert summary["self_by_bucket"]["Ed25519 verify (PyNaCl/libsodium)"] == 60.0
    assert summary["self_by_bucket"]["Redis client (redis-py)"] == 30.0
    assert summary["inclusive_router_functions"]["broker/router/service.py:handle"] == 90.0
    assert summary["inclusive_router_functions"]["broker/store/claims.py:claim"] == 30.0


def test_throughput_ratios_pair_paths_within_the_same_round() -> None:
    load = _bench_module("load")
    throughput = _bench_module("throughput")

    def segment(path: str, round_no: int, rate: float) -> Any:
        return load.Segment(path, round_no, 1024, 100, 1.0, rate, {}, {}, 0, 0)

    segments = [
        segment("raw", 1, 1000.0), segment("router", 1, 900.0),
        segment("raw", 2, 500.0), segment("router", 2, 450.0),
    ]  # fmt: skip
    assert throughput.paired_ratios(segments, "router", "raw") == [0.9, 0.9]
    [raw, router] = throughput.summarise(segments, ["raw", "router"], "raw")
    assert router["ratio_vs_raw"] == 0.9 and raw["ratio_vs_raw"] == 1.0
    assert router["median_per_second"] == 675.0


def test_percentile_is_nearest_rank() -> None:
    harness = _bench_module("harness")
    values = [float(v) for v in range(1, 101)]
    assert harness.percentile(values, 50) == 50.0
    assert harness.percentile(values, 99) == 99.0
    assert harness.percentile(values, 100) == 100.0


def test_the_efficacy_report_shows_its_command_without_server_urls(monkeypatch: Any) -> None:
    # The command is printed into docs/EFFICACY.md; server URLs carry the run's passwords.
    monkeypatch.syspath_prepend(str(BENCH.parent))
    efficacy = importlib.import_module("efficacy")
    argv = ["--scale", "full", "--seed", "3", "--redis-url", "redis://:s3cret@h:6379/0",
            "--amqp-url=amqp://u:s3cret@h/", "--json", "/tmp/x.json", "--write-docs"]  # fmt: skip
    shown = efficacy._command(argv)
    assert shown == "python bench/efficacy.py --scale full --seed 3"
    assert "s3cret" not in shown
