"""Decision latency for a warm peer: what the router's CPU spends on each message.

Measures, per message, with everything already in memory (no Redis, no RabbitMQ):

  full        decode_envelope + Ed25519 verify + gates + five dimensions + decision
  no-verify   the same, with the signature reported valid by the caller
  decide      decide() alone on a pre-decoded envelope whose signature was verified

and the memory one cached PeerState (with a Credential) costs. Signed envelopes, each with
its own id and nonce, are generated before any timing starts.

    python bench/decision.py                 # 100,000 messages per scenario
    python bench/decision.py --quick         # 2,000: a smoke run for CI
    python bench/decision.py --json out.json
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from broker.core.envelope import (
    DecodedEnvelope,
    PaymentIntent,
    decode_envelope,
    encode_envelope,
    sign_envelope,
)
from broker.core.identity import AgentKey, did_from_public_key
from broker.core.policy import Policy
from broker.core.scoring import decide
from broker.core.state import (
    Bond,
    Credential,
    DecayedCount,
    Manifest,
    PeerState,
    RecipientProfile,
    TrustContext,
    TrustList,
)

HEADER = f"{'scenario':<12} {'n':>8} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'mean ms':>9}"
NOW = 1_750_000_000_000
DAY_MS = 86_400_000
ISSUER = AgentKey(bytes([9]) * 32).did
WARMUP = 1_000


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; return the process exit code."""
    args = _parse(argv)
    messages = 2_000 if args.quick else args.messages
    peers = 1_000 if args.quick else 10_000
    cpu = _pin_to_one_core()
    machine = _machine_info(cpu)
    for key, value in machine.items():
        print(f"{key:<10} {value}")

    sender, ctx, policy = _warm_peer()
    print(f"\ngenerating {messages:,} signed envelopes ...", flush=True)
    raws = _signed_envelopes(sender, messages + WARMUP)
    warm, timed = raws[:WARMUP], raws[WARMUP:]

    results = {
        "full": _measure(timed, warm, lambda raw: decide(decode_envelope(raw), ctx, policy, NOW)),
        "no-verify": _measure(
            timed,
            warm,
            lambda raw: decide(decode_envelope(raw), ctx, policy, NOW, signature_ok=True),
        ),
    }
    decoded = [decode_envelope(raw) for raw in timed]
    warm_decoded = [decode_envelope(raw) for raw in warm]
    results["decide"] = _measure(
        decoded, warm_decoded, lambda env: decide(env, ctx, policy, NOW, signature_ok=True)
    )
    _check_outcome(decoded[0], ctx, policy)

    print()
    print(HEADER)
    for name, stats in results.items():
        print(
            f"{name:<12} {stats['n']:>8,} {stats['p50_ms']:>9.4f} {stats['p99_ms']:>9.4f} "
            f"{stats['max_ms']:>9.4f} {stats['mean_ms']:>9.4f}"
        )

    print("  full: decode + verify + gates + scoring; no-verify: signature_ok=True;")
    print("  decide: decide() on a pre-decoded, pre-verified envelope")

    per_peer = _bytes_per_peer(peers)
    print(
        f"\nmemory per cached peer: {per_peer:,.0f} bytes (PeerState with DID, Credential, "
        f"counters, bond and 24 h spend; {peers:,} peers)"
    )

    if args.json:
        report = {
            "machine": machine,
            "messages": messages,
            "scenarios": results,
            "bytes_per_peer": per_peer,
            "peers_measured": peers,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"results written to {args.json}")
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=100_000, help="messages per scenario")
    parser.add_argument("--quick", action="store_true", help="2,000 messages: a CI smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser.parse_args(argv)


def _pin_to_one_core() -> int | None:
    """Pin to one CPU so the scheduler does not move the process mid-measurement."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _machine_info(cpu: int | None) -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "pinned_to": cpu,
    }


def _warm_peer() -> tuple[AgentKey, TrustContext, Policy]:
    """A trusted sender the router has seen for months: every dimension has evidence."""
    sender = AgentKey(bytes([1]) * 32)
    recipient = AgentKey(bytes([2]) * 32)
    peer = PeerState(
        did=sender.did,
        possession_verified_ms=NOW - DAY_MS,
        possession_expires_ms=NOW + 6 * DAY_MS,
        credential=_credential(sender.did, 0),
        successes=DecayedCount(60.0, NOW - DAY_MS),
        clean_streak=60,
        bond=_bond(10_000_00, 0),
        manifest=Manifest(
            "manifest-1", frozenset({"request", "payment"}), NOW - DAY_MS, NOW + DAY_MS
        ),
        spent_24h_ref=120_00,
    )
    profile = RecipientProfile(did=recipient.did, accepted_data_classes=frozenset({"pii"}))
    trust = TrustList({ISSUER: frozenset({"identity", "stake"})})
    ctx = TrustContext(peer=peer, recipient=profile, issuers=trust)
    return sender, ctx, Policy()


def _bond(amount_minor: int, serial: int) -> Bond:
    return Bond(f"bond-{serial:08d}", ISSUER, amount_minor, "USD", NOW - DAY_MS, NOW + 30 * DAY_MS)


def _credential(subject: str, serial: int) -> Credential:
    return Credential(
        credential_id=f"cred-{serial:08d}",
        issuer=ISSUER,
        subject=subject,
        organisation="Example Logistics Ltd",
        issued_at_ms=NOW - 30 * DAY_MS,
        expires_at_ms=NOW + 335 * DAY_MS,
    )


def _signed_envelopes(sender: AgentKey, count: int) -> list[bytes]:
    """Distinct wire envelopes: a request in most, a small payment in every tenth."""
    recipient = AgentKey(bytes([2]) * 32).did
    raws = []
    for n in range(count):
        payment = PaymentIntent(currency="USD", amount="42.50") if n % 10 == 0 else None
        envelope = sign_envelope(
            sender,
            id=f"bench-{n:010d}",
            recipient=recipient,
            kind="payment" if payment else "request",
            created_at=NOW - (n % 1_000),
            nonce=os.urandom(16).hex(),
            expires_at=NOW + 60_000,
            payment=payment,
            data_classes=("pii",),
            body={
                "task": "quote",
                "route": {"from": "Rotterdam", "to": "Felixstowe"},
                "items": [{"sku": f"SKU-{n % 97:04d}", "qty": n % 7 + 1}],
            },
        )
        raws.append(encode_envelope(envelope))
    return raws


def _measure(
    items: Sequence[Any], warm: Sequence[Any], call: Callable[[Any], Any]
) -> dict[str, Any]:
    """Time each call with perf_counter_ns; GC stays on, as it does in the router."""
    for item in warm:
        call(item)
    gc.collect()
    samples = [0] * len(items)
    clock = time.perf_counter_ns
    for i, item in enumerate(items):
        start = clock()
        call(item)
        samples[i] = clock() - start
    samples.sort()
    n = len(samples)
    return {
        "n": n,
        "p50_ms": samples[n // 2] / 1e6,
        "p99_ms": samples[min(n - 1, (n * 99) // 100)] / 1e6,
        "max_ms": samples[-1] / 1e6,
        "mean_ms": statistics.fmean(samples) / 1e6,
    }


def _check_outcome(decoded: DecodedEnvelope, ctx: TrustContext, policy: Policy) -> None:
    # A benchmark of the wrong path is worthless: the warm peer must be scored and delivered.
    decision = decide(decoded, ctx, policy, NOW)
    if decision.gate is not None or decision.action.value != "deliver":
        raise SystemExit(f"benchmark setup is wrong: {decision.to_dict()}")


def _bytes_per_peer(count: int) -> float:
    """tracemalloc size of `count` distinct PeerStates, each with a Credential, per peer."""
    keys = [os.urandom(32) for _ in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    peers = [
        PeerState(
            did=did_from_public_key(key),
            possession_verified_ms=NOW - DAY_MS,
            possession_expires_ms=NOW + 6 * DAY_MS,
            credential=_credential(did_from_public_key(key), serial),
            successes=DecayedCount(float(serial % 60), NOW - serial),
            failures=DecayedCount(0.0, NOW - serial),
            clean_streak=serial % 60,
            bond=_bond(1_000_00 + serial, serial),
            spent_24h_ref=serial,
        )
        for serial, key in enumerate(keys)
    ]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    allocated = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del peers
    return allocated / count


if __name__ == "__main__":
    sys.exit(main())
