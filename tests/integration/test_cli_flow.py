"""The trust-broker command line against the real servers, as an operator would use it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from broker.config import BrokerConfig
from broker.core.identity import AgentKey
from broker.router import Router


def cli_env(config: BrokerConfig) -> dict[str, str]:
    return {
        **os.environ,
        "TRUST_AMQP_URL": config.amqp_url,
        "TRUST_REDIS_URL": config.redis_url,
        "TRUST_MANAGEMENT_URL": config.management_url,
        "TRUST_VHOST": config.vhost,
        "TRUST_KEY_PREFIX": config.key_prefix,
    }


async def cli(
    config: BrokerConfig, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "broker", "--log-level", "WARNING", *args]
    done = await asyncio.to_thread(
        subprocess.run, cmd, env=cli_env(config), capture_output=True, text=True, timeout=60
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return orjson.loads(done.stdout)


async def test_operator_flow_from_keygen_to_blocked_review(
    router: Router, config: BrokerConfig, tmp_path: Path
) -> None:
    keys = {name: tmp_path / f"{name}.key" for name in ("alice", "bob", "issuer")}
    dids = {
        n: as_json(await cli(config, "keygen", "--out", str(p), "--json"))["did"]
        for n, p in keys.items()
    }
    provisioned = {
        n: as_json(await cli(config, "provision", dids[n], "--json")) for n in ("alice", "bob")
    }
    urls = {n: made["amqp_url"] for n, made in provisioned.items()}
    assert provisioned["alice"]["lane_exchange"] == f"trust.in.{dids['alice']}"
    assert dids["alice"] in urls["alice"] or "did%3Akey" in urls["alice"]

    await cli(config, "issuer", "add", dids["issuer"], "--role", "identity")
    cred = tmp_path / "alice.cred.json"
    await cli(config, "evidence", "issue", "credential", "--issuer-key", str(keys["issuer"]),
              "--subject", dids["alice"], "--organisation", "Acme", "--out", str(cred))  # fmt: skip
    await cli(config, "evidence", "present", "--file", str(cred))

    peer = as_json(await cli(config, "peer", dids["alice"], "--json"))
    # A credential without a live proof of key possession does not verify identity.
    assert peer["tier"] == "blocked" and "possession_required" in peer["reasons"]["identity"]

    sent = await cli(config, "send", "--key", str(keys["alice"]), "--to", dids["bob"],
                     "--body", '{"hello": "bob"}', "--agent-url", urls["alice"])  # fmt: skip
    message_id = sent.stdout.strip()
    received = await cli(config, "receive", "--key", str(keys["bob"]), "--agent-url", urls["bob"],
                         "--timeout", "1.5", "--json")  # fmt: skip
    assert received.stdout.strip() == ""

    blocked = as_json(await cli(config, "blocked", "--reason", "insufficient_trust", "--json"))
    assert [(row["message_id"], row["sender"]) for row in blocked] == [(message_id, dids["alice"])]
    assert "raw_b64" not in blocked[0]


async def test_bad_input_gives_a_clear_error_and_a_non_zero_exit(
    config: BrokerConfig, tmp_path: Path
) -> None:
    bad_policy = tmp_path / "policy.json"
    bad_policy.write_text('{"thresholds": {"probation": 0.9, "established": 0.6, "trusted": 0.8}}')
    done = await cli(
        config, "policy", "load", str(bad_policy), "--why", "x", "--who", "y", check=False
    )
    assert done.returncode == 1 and "thresholds must rise strictly" in done.stderr
    done = await cli(config, "peer", "did:key:zNotADid", check=False)
    assert done.returncode == 1 and "did:key" in done.stderr
    someone = AgentKey.generate().did
    done = await cli(
        config, "send", "--key", str(tmp_path / "missing.key"), "--to", someone, check=False
    )
    assert done.returncode == 1 and "cannot read key file" in done.stderr


async def test_policy_load_bumps_the_version_and_routers_follow(
    router: Router, config: BrokerConfig, tmp_path: Path
) -> None:
    shown = as_json(await cli(config, "policy", "show"))
    shown["thresholds"] = {"probation": 0.55, "established": 0.65, "trusted": 0.85}
    path = tmp_path / "p.json"
    path.write_bytes(orjson.dumps(shown))
    await cli(config, "policy", "load", str(path), "--who", "ops-test", "--why", "stricter tiers")
    loaded = as_json(await cli(config, "policy", "show"))
    assert loaded["version"] == shown["version"] + 1
    for _ in range(50):
        if router.policy.version == loaded["version"]:
            break
        await asyncio.sleep(0.02)
    assert router.policy.thresholds.probation == 0.55


async def test_the_demo_plays_every_outcome(base_config: BrokerConfig) -> None:
    done = await cli(base_config, "demo", "--no-start-servers")
    for expected in ("insufficient_trust", "probation", "payment_trust_threshold",
                     "payment_within_caps", "payment_cap_exceeded", "privacy_violation",
                     "unknown_recipient", "replay", "bad_signature", "malformed"):  # fmt: skip
        assert expected in done.stdout, expected
    assert "exactly one place" in done.stdout
