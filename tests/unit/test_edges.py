"""Exactly what was signed, and fuzzing every pure input the broker accepts (issue 11).

Duplicate keys are refused with the key path, non-canonical spellings are decoded to the
RFC 8785 bytes a recipient is given, and no input makes a decoder or verifier raise
anything but a typed error from broker/errors.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.core.agreements import verify_manifest, verify_pact, verify_rotation, verify_vouch
from broker.core.canonical import canonical_json, duplicate_key_path, loads_strict
from broker.core.envelope import decode_envelope, encode_envelope, sign_envelope, signature_valid
from broker.core.evidence import verify_evidence
from broker.core.handshake import answer_challenge, check_response, make_challenge
from broker.core.identity import AgentKey
from broker.core.presentation import open_presentation
from broker.core.reports import parse_report
from broker.errors import EnvelopeError, EvidenceError, IdentityError, TrustBrokerError
from broker.router.negotiation import is_direct_reply_to

ALICE, BOB = AgentKey.generate(), AgentKey.generate()
NOW = 1_700_000_000_000
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def envelope_bytes(body: Any = None) -> bytes:
    env = sign_envelope(
        ALICE, id=f"msg-{os.urandom(4).hex()}", recipient=BOB.did, kind="data",
        created_at=NOW, nonce=os.urandom(16).hex(), body={"amount": 1} if body is None else body,
    )  # fmt: skip
    return encode_envelope(env)


# -- duplicate keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"a": 1, "a": 2}', "a"),
        ('{"a": {"b": 1, "c": {"d": 1, "d": 1}}}', "a.c.d"),
        ('{"a": [1, {"x": 1, "x": 2}]}', "a.1.x"),
        ('[{"k": 1}, {"k": 1, "k": 1}]', "1.k"),
        ('{"a": 1, "b": 2}', None),
    ],
)
def test_a_duplicate_key_is_found_by_its_path(text: str, path: str | None) -> None:
    assert duplicate_key_path(text.encode()) == path


def test_the_duplicate_body_envelope_of_the_issue_is_malformed_naming_body() -> None:
    raw = envelope_bytes({"amount": 1})
    doubled = raw.replace(b'"body":{"amount":1}', b'"body":{"amount":1000},"body":{"amount":1}')
    assert doubled != raw and orjson.loads(doubled)["body"] == {"amount": 1}
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(doubled)
    assert (caught.value.code, caught.value.field) == ("malformed", "body")


def test_a_duplicate_key_inside_the_body_is_malformed_naming_its_path() -> None:
    raw = envelope_bytes({"pay": {"amount": 1}})
    doubled = raw.replace(b'{"amount":1}', b'{"amount":1000,"amount":1}')
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(doubled)
    assert caught.value.field == "body.pay.amount"


def test_documents_off_the_hot_path_refuse_duplicates_too() -> None:
    with pytest.raises(EnvelopeError) as caught:
        loads_strict(b'{"op": "hello", "agent": "x", "agent": "y"}')
    assert caught.value.field == "agent"
    assert loads_strict(b'{"op": "hello"}') == {"op": "hello"}


# -- the recipient gets what was verified ----------------------------------------------------


def test_the_sdk_sends_canonical_bytes_which_are_delivered_as_they_are() -> None:
    raw = envelope_bytes()
    decoded = decode_envelope(raw)
    assert raw == canonical_json(orjson.loads(raw)) and decoded.wire is raw


@pytest.mark.parametrize(
    ("spelled", "canonical"), [(b"1.0", b"1"), (b"-0", b"0"), (b"1E2", b"100")]
)
def test_a_non_canonical_number_is_delivered_in_its_canonical_form(
    spelled: bytes, canonical: bytes
) -> None:
    env = sign_envelope(
        ALICE, id="msg-number-1", recipient=BOB.did, kind="data", created_at=NOW,
        nonce="ab" * 16, body={"n": orjson.loads(canonical)},
    )  # fmt: skip
    raw = encode_envelope(env).replace(b'"n":' + canonical, b'"n":' + spelled)
    assert raw != encode_envelope(env)
    decoded = decode_envelope(raw)
    assert signature_valid(decoded)  # it is the same JSON value, so the same signature
    assert decoded.wire == encode_envelope(env) and b'"n":' + canonical in decoded.wire


def test_pretty_printed_input_is_delivered_canonical() -> None:
    raw = envelope_bytes()
    pretty = orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2)
    assert decode_envelope(pretty).wire == raw


@pytest.mark.parametrize(
    ("reply_to", "ok"),
    [
        # As RabbitMQ 3.10 writes it for a consuming channel:
        (
            "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAzODU1ODczMwAAfUMAAAABaw9ZAQ==."
            "vsRkc+xiOOmiUrOfZakVtw==",
            True,
        ),
        ("amq.rabbitmq.reply-to", False),  # RabbitMQ never passes the bare name on
        ("amq.rabbitmq.reply-to.g1h2AA5yZXBseUAx.abc", False),  # truncated pid
        ("amq.rabbitmq.reply-to.g1h2AA5yZXBseUAy.AAAAAAAAAAAAAAAAAAAAAA==", False),
        ("amq.rabbitmq.reply-to.g2QAAm9r.vsRkc+xiOOmiUrOfZakVtw==", False),  # an atom
        ("agent.did:key:z6Mk", False),
        ("trust.blocked", False),
        ("trust.escalations", False),
        ("amq.rabbitmq.reply-tox", False),
        ("", False),
        (None, False),
    ],
)
def test_only_direct_reply_to_is_answered(reply_to: str | None, ok: bool) -> None:
    assert is_direct_reply_to(reply_to) is ok


# -- fuzzing: zero crashes, every rejection typed ----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ("version", "id", "sender", "recipient", "kind", "created_at", "nonce", "expires_at",
          "payment", "data_classes", "body", "signature")  # fmt: skip


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_envelope_decoder_on_arbitrary_bytes(raw: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_envelope(raw)


@FUZZ
@given(st.sampled_from(FIELDS), json_values, st.booleans())
def test_fuzz_envelope_decoder_on_mutated_envelopes(field: str, value: Any, drop: bool) -> None:
    obj = orjson.loads(envelope_bytes())
    if drop:
        obj.pop(field, None)
    else:
        obj[field] = value
    try:
        raw = orjson.dumps(obj)
    except TypeError:
        return
    try:
        decoded = decode_envelope(raw)
    except EnvelopeError as exc:
        assert exc.code in ("malformed", "oversized")
        return
    # Whatever passes is delivered as the canonical bytes of what was parsed.
    assert decoded.wire == canonical_json(orjson.loads(raw))


@FUZZ
@given(st.binary(max_size=256))
def test_fuzz_byte_splices_into_a_valid_envelope(junk: bytes) -> None:
    raw = envelope_bytes()
    cut = len(junk) % len(raw)
    with contextlib.suppress(EnvelopeError):
        decode_envelope(raw[:cut] + junk + raw[cut:])


def _typed(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except (EvidenceError, EnvelopeError, IdentityError) as exc:
        assert isinstance(exc, TrustBrokerError)
        code = getattr(exc, "code", "bad_did")
        assert isinstance(code, str) and code


documents = st.dictionaries(
    st.sampled_from(["type", "id", "issuer", "subject", "agent", "broker", "challenge",
                     "issued_at", "expires_at", "created_at", "signature", "documents",
                     "organisation", "capabilities", "parties", "old", "new", "vouchee"]),
    json_values, max_size=10,
) | json_values  # fmt: skip


@FUZZ
@given(documents)
def test_fuzz_handshake_messages(document: Any) -> None:
    challenge = make_challenge(BOB, ALICE.did, os.urandom(32), NOW, 30_000)
    pending = (ALICE.did, NOW + 30_000)
    if isinstance(document, dict):
        _typed(check_response, document, BOB.did, pending, NOW, 3_600_000)
        _typed(answer_challenge, ALICE, {**challenge, **document}, NOW)
    _typed(open_presentation, document, BOB.did, NOW, 30_000)


@FUZZ
@given(documents, st.sampled_from(["credential", "attestation", "bond"]))
def test_fuzz_evidence_documents(document: Any, kind: Any) -> None:
    _typed(verify_evidence, document, kind, NOW)


@FUZZ
@given(documents)
def test_fuzz_agreement_documents(document: Any) -> None:
    if not isinstance(document, dict):
        document = {"value": document}
    for verify in (verify_manifest, verify_pact, verify_rotation, verify_vouch):
        _typed(verify, document, NOW)


@FUZZ
@given(json_values)
def test_fuzz_reports(body: Any) -> None:
    try:
        parse_report(body)
    except EnvelopeError as exc:
        assert exc.code == "report_malformed"


@FUZZ
@given(st.binary(max_size=256))
def test_fuzz_strict_loads(raw: bytes) -> None:
    try:
        loads_strict(raw)
    except orjson.JSONDecodeError:
        pass
    except EnvelopeError as exc:
        assert exc.code == "malformed"


@FUZZ
@given(
    st.sampled_from(["thresholds.probation", "gates.max_envelope_bytes", "weights.identity",
                     "caps", "", ".", "gates..x", "thresholds"]) | st.text(max_size=30),
    st.text(max_size=40) | json_values.map(json.dumps),
)  # fmt: skip
def test_fuzz_policy_changes_from_the_console_and_cli(path: str, value: str) -> None:
    from broker.core.policy import Policy
    from broker.core.policydiff import set_value
    from broker.errors import ConfigError, PolicyError

    with contextlib.suppress(PolicyError, ConfigError):
        set_value(Policy(), path, value)


@FUZZ
@given(st.dictionaries(st.sampled_from(["hours", "sender", "recipient", "reason", "limit", "x"]),
                       st.text(max_size=30), max_size=5), st.text(max_size=80))  # fmt: skip
def test_fuzz_console_query_and_path_parameters(query: dict[str, str], raw: str) -> None:
    from starlette.datastructures import QueryParams

    from broker.console import params
    from broker.console.queries import WhatIfRequest
    from broker.errors import ConfigError, PolicyError

    for call in (
        lambda: params.blocked_filter(QueryParams(query), NOW),
        lambda: params.limit(QueryParams(query), 100),
        lambda: params.did(raw),
        lambda: params.trace(raw),
        lambda: WhatIfRequest.parse(raw, 100),
    ):
        with contextlib.suppress(ConfigError, PolicyError, IdentityError, EnvelopeError):
            call()


@FUZZ
@given(
    st.text(max_size=120)
    | st.binary(max_size=40).map(
        lambda raw: "amq.rabbitmq.reply-to." + base64.b64encode(b"\x83Xv" + raw).decode()
        + ".vsRkc+xiOOmiUrOfZakVtw=="
    )
)  # fmt: skip
def test_fuzz_direct_reply_to_names(reply_to: str) -> None:
    from broker.router.negotiation import reply_node

    node = reply_node(reply_to)
    assert node is None or node.startswith(b"reply@")
