"""The decision log and flight recorder (broker/core/recorder.py): ids, entries and traces."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from broker.core.decision import Action, Decision, Tier
from broker.core.envelope import Envelope, PaymentIntent
from broker.core.recorder import (
    check_trace_id,
    decision_entry,
    new_trace_id,
    trace_record,
    trace_time_ms,
)
from broker.errors import ConfigError
from tests.unit.factories import NOW, RECIPIENT, SENDER, payment_envelope, sign_envelope

HEX32 = "0123456789abcdef" * 2


@pytest.mark.parametrize("trace_id", [HEX32, "0" * 32, "f" * 32])
def test_a_trace_id_of_32_lowercase_hex_is_accepted(trace_id: str) -> None:
    assert check_trace_id(trace_id) == trace_id


@pytest.mark.parametrize(
    "trace_id",
    ["", HEX32[:31], HEX32 + "0", HEX32.upper(), "g" + HEX32[1:],
     "01234567-89ab-cdef-0123-456789abcdef", "../" + HEX32[3:], HEX32 + "\n"],
    ids=["empty", "31", "33", "upper", "not-hex", "uuid-dashes", "path", "newline"],
)  # fmt: skip
def test_any_other_trace_id_is_refused(trace_id: str) -> None:
    with pytest.raises(ConfigError, match="32 lowercase hex"):
        check_trace_id(trace_id)


# UUIDv7 layout (RFC 9562): 48 bits of time, version 7, 12 random bits, variant 0b10, 62
# random bits. The first 12 hex digits are the time, digit 12 is 7, digit 16 is 8-b.
@pytest.mark.parametrize(
    ("now_ms", "time_hex"),
    [
        (0, "000000000000"),
        (1, "000000000001"),
        (NOW, "01977420dc00"),
        (2**48 - 1, "ffffffffffff"),
        (2**48 + 5, "000000000005"),  # beyond 48 bits: only the low 48 are kept
    ],
)
def test_a_new_trace_id_is_a_uuid7_carrying_the_time(now_ms: int, time_hex: str) -> None:
    trace_id = new_trace_id(now_ms)
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert trace_id[:12] == time_hex
    assert trace_id[12] == "7" and trace_id[16] in "89ab"
    assert trace_time_ms(trace_id) == now_ms % 2**48


def test_new_trace_ids_differ_in_the_same_millisecond() -> None:
    assert len({new_trace_id(NOW) for _ in range(100)}) == 100


@pytest.mark.parametrize(
    ("trace_id", "when"),
    [
        ("01977420dc00" + "7abc" + "8" + "0" * 15, NOW),
        ("000000000001" + "7000" + "b" + "f" * 15, 1),
        ("01977420dc00" + "4abc" + "8" + "0" * 15, None),  # version 4: a random id
        ("01977420dc00" + "7abc" + "c" + "0" * 15, None),  # not the RFC variant
        ("01977420dc00" + "7abc" + "7" + "0" * 15, None),
        ("01977420DC00" + "7abc" + "8" + "0" * 15, None),  # not a trace id at all
        ("01977420dc00" + "7abc" + "8", None),
    ],
    ids=["now", "one", "v4", "variant-c", "variant-7", "upper", "short"],
)
def test_only_a_uuid7_trace_id_tells_its_time(trace_id: str, when: int | None) -> None:
    assert trace_time_ms(trace_id) == when


def _decision(**overrides: Any) -> Decision:
    fields: dict[str, Any] = {
        "action": Action.DELIVER, "tier": Tier.ESTABLISHED, "composite": 0.65,
        "dimensions": {"identity": 0.9, "reputation": 0.4, "compliance": 0.5,
                       "behavioral": 0.5, "stake": 0.6},
        "weakest": "reputation", "reasons": ("trust_sufficient",), "remediation": "",
        "policy_version": 3, "identity_verified": True,
    }  # fmt: skip
    fields.update(overrides)
    return Decision(**fields)


def test_the_decision_log_entry_of_a_payment() -> None:
    env = payment_envelope("12.34")
    decision = _decision(action=Action.ESCALATE, reasons=("payment_hold",), payment_hold=True)
    entry = decision_entry(decision, HEX32, NOW, env, spent_ref_minor=4_500)
    assert entry == {
        "t": NOW, "trace": HEX32, "id": env.id, "from": SENDER.did, "to": RECIPIENT.did,
        "kind": "payment", "pay": True, "amount": 1234, "cur": "USD", "spent": 4_500,
        "idv": True, "hold": True, "dims": decision.dimensions, "gate": None,
        "reasons": ["payment_hold"], "action": "escalate", "tier": "established",
        "c": 0.65, "pv": 3,
    }  # fmt: skip


def test_the_decision_log_entry_of_a_message_without_payment() -> None:
    env = sign_envelope()
    entry = decision_entry(_decision(), HEX32, NOW, env, spent_ref_minor=0)
    assert (entry["kind"], entry["pay"], entry["amount"], entry["cur"]) == ("data", False, None, "")


def test_a_payment_intent_on_any_kind_is_logged_as_a_payment() -> None:
    env = sign_envelope(payment=PaymentIntent(currency="EUR", amount_minor=250))
    entry = decision_entry(_decision(), HEX32, NOW, env, spent_ref_minor=0)
    logged = (entry["kind"], entry["pay"], entry["amount"], entry["cur"])
    assert logged == ("data", True, 250, "EUR")


def test_the_decision_log_entry_of_undecodable_bytes() -> None:
    gated = _decision(
        action=Action.BLOCK, tier=Tier.BLOCKED, composite=None, dimensions={}, weakest=None,
        reasons=("malformed",), gate="malformed", identity_verified=False,
    )  # fmt: skip
    entry = decision_entry(gated, HEX32, NOW, None, spent_ref_minor=0)
    assert {key: entry[key] for key in ("id", "from", "to", "kind", "pay", "amount", "cur")} == {
        "id": None, "from": None, "to": None, "kind": None, "pay": False, "amount": None,
        "cur": "",
    }  # fmt: skip
    assert (entry["gate"], entry["c"], entry["dims"]) == ("malformed", None, {})
    assert entry["idv"] is False


# The factories' body, {"task": "summarise", "items": [1, 2, 3]}, in RFC 8785 form: keys
# sorted, no whitespace.
BODY_SHA256 = hashlib.sha256(b'{"items":[1,2,3],"task":"summarise"}').hexdigest()


@pytest.mark.parametrize(
    ("monitoring", "content"),
    [
        ("full", {"body": {"task": "summarise", "items": [1, 2, 3]}}),
        ("hashes", {"body_sha256": BODY_SHA256}),
        ("metadata", None),
        ("anything else", None),  # unknown terms keep the least
    ],
)
def test_the_trace_keeps_what_the_monitoring_terms_allow(monitoring: str, content: Any) -> None:
    env = sign_envelope()
    entry = decision_entry(_decision(), HEX32, NOW, env, spent_ref_minor=0)
    record = trace_record(entry, _decision(), env, 321, monitoring, NOW + 7)
    assert record["content"] == content
    assert (record["trace_id"], record["received_ms"], record["committed_ms"]) == (
        HEX32, NOW, NOW + 7,
    )  # fmt: skip
    assert (record["size"], record["monitoring"]) == (321, monitoring)
    assert record["decision"]["action"] == "deliver"
    assert record["message"] == {
        "id": env.id, "sender": SENDER.did, "recipient": RECIPIENT.did, "kind": "data",
        "created_at": NOW, "data_classes": [], "payment": None,
    }  # fmt: skip


def test_a_body_without_a_canonical_form_keeps_no_hash() -> None:
    env: Envelope = sign_envelope().model_copy(update={"body": {"n": 2**60}})
    entry = decision_entry(_decision(), HEX32, NOW, env, spent_ref_minor=0)
    assert trace_record(entry, _decision(), env, 1, "hashes", NOW)["content"] is None


def test_a_payment_trace_names_the_payment_as_sent() -> None:
    env = payment_envelope("12.34", data_classes=("pii",))
    entry = decision_entry(_decision(), HEX32, NOW, env, spent_ref_minor=0)
    message = trace_record(entry, _decision(), env, 1, "metadata", NOW)["message"]
    assert message["payment"] == {"currency": "USD", "amount": "12.34"}
    assert message["data_classes"] == ["pii"]


def test_the_trace_of_undecodable_bytes_has_no_message_and_no_content() -> None:
    gated = _decision(composite=None, gate="malformed")
    entry = decision_entry(gated, HEX32, NOW, None, spent_ref_minor=0)
    record = trace_record(entry, gated, None, 9, "full", NOW)
    assert "message" not in record and "content" not in record
    assert record["decision"]["gate"] == "malformed"
