"""Pure parts of onboarding and review: next steps, unparseable records, time-bearing trace
ids, remembered server settings, policy history, what errors say."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aio_pika.exceptions import AMQPConnectionError
from aiormq.exceptions import ChannelAccessRefused
from pydantic import ValidationError

from broker.cli.errors import explain_error
from broker.config import BrokerConfig
from broker.core.envelope import PaymentIntent
from broker.core.guidance import next_step, verdict
from broker.core.policy import Policy
from broker.core.policydiff import history_with_default
from broker.core.recorder import new_trace_id, trace_time_ms
from broker.core.records import UNPARSEABLE, parse_record
from broker.devkit import servers
from broker.devkit.layout import ServerConfig
from broker.errors import StoreUnavailable

WEIGHTS = Policy().weights.as_dict()
THRESHOLDS = Policy().thresholds.model_dump()


def view(dims: dict[str, float], reasons: dict[str, list[str]], composite: float, tier: str,
         action: str, because: str, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"dimensions": dims, "reasons": reasons, "composite": composite, "tier": tier,
            "action": action, "action_reason": because, "weights": WEIGHTS,
            "thresholds": THRESHOLDS, "kind": "data", "payment": None, **extra}  # fmt: skip


NEWCOMER = view(
    {"identity": 0.2, "reputation": 0.25, "compliance": 0.5, "behavioral": 0.5, "stake": 0.0},
    {"identity": ["identity_unverified"], "stake": ["stake_none"]},
    0.2975, "blocked", "block", "insufficient_trust",
)  # fmt: skip
PROVEN = view(
    {"identity": 0.4, "reputation": 0.25, "compliance": 0.5, "behavioral": 0.5, "stake": 0.0},
    {"identity": ["identity_possession", "credential_missing"]},
    0.3575, "blocked", "block", "insufficient_trust",
)  # fmt: skip
VERIFIED = view(
    {"identity": 0.9, "reputation": 0.25, "compliance": 0.5, "behavioral": 0.5, "stake": 0.0},
    {"identity": ["identity_verified"], "stake": ["stake_none"]},
    0.5075, "probation", "deliver", "probation",
)  # fmt: skip


@pytest.mark.parametrize(
    ("standing", "expected"),
    [
        (NEWCOMER, ["to reach probation (0.50, +0.2025)", "identity", "trust-broker handshake",
                    "identity credential"]),
        (PROVEN, ["identity can add up to 0.1800", "present an identity credential"]),
        # Reputation is the weakest, but a bond alone lifts it over 0.60 today.
        (VERIFIED, ["to reach established (0.60, +0.0925)", "stake can add up to 0.1000",
                    "post a bond"]),
        ({**VERIFIED, "composite": 0.6075, "tier": "established",
          "action_reason": "trust_sufficient"}, ["none needed"]),
        ({**VERIFIED, "action": "block", "action_reason": "payment_trust_threshold",
          "payment": {"amount": "20", "currency": "USD"}}, ["to reach established"]),
        ({**VERIFIED, "tier": "revoked"}, ["revoked"]),
    ],
    ids=["newcomer", "key-proven", "verified", "established", "payment", "revoked"],
)  # fmt: skip
def test_the_next_step_is_the_cheapest_that_is_enough(
    standing: dict[str, Any], expected: list[str]
) -> None:
    step = next_step(standing, key="alice.key")
    for text in expected:
        assert text in step, (text, step)


def test_the_verdict_names_the_message_and_what_happens_to_it() -> None:
    assert verdict(NEWCOMER) == "a data message from you is blocked (insufficient_trust)"
    paid = {**VERIFIED, "payment": {"amount": "20", "currency": "USD"},
            "action_reason": "payment_within_caps"}  # fmt: skip
    assert verdict(paid) == "a payment of 20 USD from you is delivered (payment_within_caps)"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"reason": "x"}', "no trace_id"),
        (orjson.dumps({"trace_id": "a" * 32, "reason": "x", "raw_b64": ""}), "no decision"),
        (orjson.dumps({"trace_id": "a" * 32, "reason": "x", "raw_b64": "",
                       "decision": {"action": "block", "reasons": "x"}}), "reasons"),
        (orjson.dumps({"trace_id": "a" * 32, "reason": "x", "raw_b64": "",
                       "decision": {"action": "block", "reasons": [],
                                    "dimensions": {"identity": "high"}}}), "dimension"),
    ],
    ids=["bytes", "array", "no-trace", "no-decision", "bad-reasons", "bad-dimensions"],
)  # fmt: skip
def test_entries_no_router_wrote_become_unparseable_records(body: bytes, problem: str) -> None:
    record = parse_record(body, {})
    assert record["reason"] == UNPARSEABLE and problem in record["unparseable"]
    # Every reader can show it like any record, and its bytes are kept.
    assert record["decision"]["action"] == "block" and record["decision"]["reasons"]
    assert record["decision"]["remediation"] and len(record["trace_id"]) == 32
    import base64

    assert base64.b64decode(record["raw_b64"]) == body


def test_a_record_a_router_wrote_comes_out_unchanged() -> None:
    decision = {"action": "block", "reasons": ["insufficient_trust"],
                "dimensions": {"identity": 0.2}, "composite": 0.3}  # fmt: skip
    record = {"trace_id": "b" * 32, "reason": "insufficient_trust", "raw_b64": "e30=",
              "received_ms": 5, "decision": decision}  # fmt: skip
    assert parse_record(orjson.dumps(record), {}) == record


def test_trace_ids_carry_the_time_they_were_made() -> None:
    made = new_trace_id(1_796_155_238_340)
    assert len(made) == 32 and uuid.UUID(made).version == 7
    assert trace_time_ms(made) == 1_796_155_238_340
    assert new_trace_id(1_796_155_238_340) != made
    assert trace_time_ms(uuid.uuid4().hex) is None  # older random ids say nothing


def test_stop_and_status_aim_at_the_servers_start_recorded(tmp_path: Path) -> None:
    started = ServerConfig(run_dir=tmp_path, amqp_port=5999, dist_port=26999,
                                   node_name="other@localhost")  # fmt: skip
    servers.remember(started)
    later = ServerConfig(run_dir=tmp_path)  # no flags, no variables
    assert servers.remembered(later, {}) == started
    assert servers.remembered(later, {"TRUST_AMQP_PORT": "5111"}).amqp_port == 5672
    assert servers.remembered(later, {}, explicit=["dist_port"]).dist_port == 25672
    assert servers.remembered(ServerConfig(run_dir=tmp_path / "x"), {}).amqp_port == 5672


def test_policy_history_ends_with_the_built_in_version_1() -> None:
    saved = [{"version": 3, "who": "olga", "why": "b", "at_ms": 2},
             {"version": 2, "who": "olga", "why": "a", "at_ms": 1}]  # fmt: skip
    history = history_with_default(saved, limit=50)
    assert [entry["version"] for entry in history] == [3, 2, 1]
    assert history[-1]["who"] == "(built in)"
    assert history_with_default(saved, limit=2) == saved  # v1 is past the limit


ARGS = argparse.Namespace(agent_url="amqp://did%3Akey%3Az6Mk:s3cret@127.0.0.1:5999/%2F")
CONFIG = BrokerConfig(redis_url="redis://:pw@127.0.0.1:6999/0")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (StoreUnavailable("Redis unavailable: ConnectionError"),
         ["redis://:***@127.0.0.1:6999/0", "TRUST_REDIS_URL", "servers start"]),
        (AMQPConnectionError(111, "Connect call failed"),
         ["cannot reach RabbitMQ at amqp://did%3Akey%3Az6Mk:***@127.0.0.1:5999/%2F",
          "--agent-url"]),
        (ChannelAccessRefused("ACCESS_REFUSED - access to queue 'agent.x' refused"),
         ["access to queue 'agent.x' refused", "its own queue", "--agent-url"]),
        (RuntimeError("boom"), ["unexpected RuntimeError: boom", "--debug"]),
    ],
    ids=["redis", "rabbitmq", "someone-else's-queue", "bug"],
)  # fmt: skip
def test_errors_say_what_failed_where_and_what_to_do(error: Exception, expected: list[str]) -> None:
    said = explain_error(error, ARGS, CONFIG)
    assert "\n" not in said and "s3cret" not in said and ":pw@" not in said
    for text in expected:
        assert text in said, (text, said)


def test_a_bad_amount_is_one_line_naming_the_flag() -> None:
    from broker.cli.support import payment_of
    from broker.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        payment_of("twenty", "USD")
    assert "--amount 'twenty'" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(ValidationError):
        PaymentIntent(currency="USD", amount="twenty")  # what used to reach the user


def test_a_closed_pipe_ends_the_command_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.cli import local, main

    async def writes_into_a_closed_pipe(args: Any, config: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(local, "cmd_decode", writes_into_a_closed_pipe)
    assert main.main(["decode", "x.json"]) == main.BROKEN_PIPE
    assert capsys.readouterr().err == ""
