"""The signed envelope: field validation, wire decoding, signing and tampering."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest

from broker.core.canonical import canonical_json
from broker.core.envelope import (
    MAX_BODY_DEPTH,
    MAX_DATA_CLASSES,
    PaymentIntent,
    decode_envelope,
    encode_envelope,
    signature_valid,
)
from broker.core.identity import AgentKey, verify_signature
from broker.errors import EnvelopeError

from .factories import DAY_MS, MINUTE_MS, NOW, OTHER, RECIPIENT, SENDER, sign_envelope, wire

THIRD = AgentKey(bytes([4]) * 32)
DELETE = object()


def _full_envelope_wire() -> dict[str, Any]:
    """Every optional field present, so every field can be broken."""
    return wire(
        sign_envelope(
            kind="payment",
            expires_at=NOW + MINUTE_MS,
            payment=PaymentIntent(currency="USD", amount="12.50"),
            data_classes=("pii", "financial_account"),
            body={"invoice": {"lines": [{"sku": "a-1", "qty": 2}], "note": "thanks"}},
        )
    )


FULL = _full_envelope_wire()


def _mutated(path: tuple[str, ...], value: Any) -> bytes:
    obj = copy.deepcopy(FULL)
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return orjson.dumps(obj)


def _nest(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_full_envelope_is_valid() -> None:
    decoded = decode_envelope(orjson.dumps(FULL))
    assert signature_valid(decoded)


# (path, bad value, field the error must name)
INVALID = [
    # id
    pytest.param(("id",), "short12", "id", id="id-too-short"),
    pytest.param(("id",), "x" * 129, "id", id="id-too-long"),
    pytest.param(("id",), "-starts-with-dash", "id", id="id-leading-dash"),
    pytest.param(("id",), "has a space", "id", id="id-space"),
    pytest.param(("id",), "über-message-1", "id", id="id-non-ascii"),
    pytest.param(("id",), 12345678, "id", id="id-number"),
    pytest.param(("id",), DELETE, "id", id="id-missing"),
    # sender / recipient
    pytest.param(("sender",), "did:key:zBAD", "sender", id="sender-bad-did"),
    pytest.param(("sender",), "did:web:example.com", "sender", id="sender-other-method"),
    pytest.param(("sender",), SENDER.did + "1", "sender", id="sender-overlong"),
    pytest.param(("sender",), DELETE, "sender", id="sender-missing"),
    pytest.param(
        ("recipient",),
        "did:key:z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW",
        "recipient",
        id="recipient-x25519",
    ),
    pytest.param(("recipient",), 42, "recipient", id="recipient-number"),
    pytest.param(("recipient",), SENDER.did, "recipient", id="recipient-is-sender"),
    # kind
    pytest.param(("kind",), "invoice", "kind", id="kind-unknown"),
    pytest.param(("kind",), "DATA", "kind", id="kind-upper-case"),
    pytest.param(("kind",), DELETE, "kind", id="kind-missing"),
    # created_at
    pytest.param(("created_at",), True, "created_at", id="created-at-bool"),
    pytest.param(("created_at",), float(NOW), "created_at", id="created-at-float"),
    pytest.param(("created_at",), -1, "created_at", id="created-at-negative"),
    pytest.param(("created_at",), 0, "created_at", id="created-at-zero"),
    pytest.param(("created_at",), 2**53, "created_at", id="created-at-too-large"),
    pytest.param(("created_at",), str(NOW), "created_at", id="created-at-string"),
    # nonce
    pytest.param(("nonce",), "a" * 31, "nonce", id="nonce-too-short"),
    pytest.param(("nonce",), "a" * 65, "nonce", id="nonce-too-long"),
    pytest.param(("nonce",), "A" * 32, "nonce", id="nonce-upper-case"),
    pytest.param(("nonce",), "g" * 32, "nonce", id="nonce-not-hex"),
    pytest.param(("nonce",), DELETE, "nonce", id="nonce-missing"),
    # expires_at
    pytest.param(("expires_at",), NOW, "expires_at", id="expires-at-equals-created-at"),
    pytest.param(("expires_at",), NOW - 1, "expires_at", id="expires-at-before-created-at"),
    pytest.param(("expires_at",), True, "expires_at", id="expires-at-bool"),
    pytest.param(("expires_at",), NOW + 0.5, "expires_at", id="expires-at-float"),
    # payment
    pytest.param(("payment", "currency"), "XYZ", "payment.currency", id="currency-unknown"),
    pytest.param(("payment", "currency"), "usd", "payment.currency", id="currency-lower-case"),
    pytest.param(("payment", "currency"), "XAU", "payment.currency", id="currency-no-minor"),
    pytest.param(("payment", "amount_minor"), 1250, "payment", id="both-amount-forms"),
    pytest.param(("payment", "amount"), DELETE, "payment", id="neither-amount-form"),
    pytest.param(("payment", "amount"), "1.001", "payment", id="usd-three-decimals"),
    pytest.param(("payment", "amount"), "0", "payment", id="amount-zero"),
    pytest.param(("payment", "amount"), "0.00", "payment", id="amount-zero-decimals"),
    pytest.param(("payment", "amount"), "-1", "payment", id="amount-negative"),
    pytest.param(("payment", "amount"), "1e3", "payment", id="amount-exponent"),
    pytest.param(("payment", "amount"), "01.50", "payment", id="amount-leading-zero"),
    pytest.param(("payment", "amount"), "1.", "payment", id="amount-trailing-dot"),
    pytest.param(("payment", "amount"), " 1", "payment", id="amount-space"),
    pytest.param(("payment", "amount"), "1" * 19, "payment", id="amount-too-many-digits"),
    pytest.param(("payment", "amount"), 12.5, "payment.amount", id="amount-float"),
    pytest.param(("payment", "amount"), 12, "payment.amount", id="amount-int"),
    pytest.param(
        ("payment",), {"currency": "USD", "amount_minor": 0}, "payment", id="amount-minor-zero"
    ),
    pytest.param(
        ("payment",), {"currency": "USD", "amount_minor": -5}, "payment", id="amount-minor-negative"
    ),
    pytest.param(
        ("payment",),
        {"currency": "USD", "amount_minor": 2**53},
        "payment.amount_minor",
        id="amount-minor-beyond-json-safe",
    ),
    pytest.param(
        ("payment",),
        {"currency": "USD", "amount": "10000000000000000"},
        "payment",
        id="amount-10^18-minor",
    ),
    pytest.param(
        ("payment",),
        {"currency": "USD", "amount_minor": 1.5},
        "payment.amount_minor",
        id="amount-minor-float",
    ),
    pytest.param(
        ("payment",),
        {"currency": "USD", "amount_minor": True},
        "payment.amount_minor",
        id="amount-minor-bool",
    ),
    pytest.param(("payment",), {"currency": "JPY", "amount": "1.5"}, "payment", id="jpy-decimals"),
    pytest.param(
        ("payment",), {"currency": "KWD", "amount": "1.0001"}, "payment", id="kwd-four-decimals"
    ),
    pytest.param(("payment", "memo"), "extra", "payment.memo", id="payment-extra-field"),
    pytest.param(("payment",), "12.50 USD", "payment", id="payment-not-object"),
    # data_classes
    pytest.param(("data_classes",), ["pii", "pii"], "data_classes", id="labels-duplicate"),
    pytest.param(("data_classes",), ["PII"], "data_classes", id="label-upper-case"),
    pytest.param(("data_classes",), ["1pii"], "data_classes", id="label-leading-digit"),
    pytest.param(("data_classes",), ["pii-x"], "data_classes", id="label-dash"),
    pytest.param(("data_classes",), ["a" * 33], "data_classes", id="label-too-long"),
    pytest.param(("data_classes",), [""], "data_classes", id="label-empty"),
    pytest.param(
        ("data_classes",),
        [f"c{i}" for i in range(MAX_DATA_CLASSES + 1)],
        "data_classes",
        id="labels-too-many",
    ),
    pytest.param(("data_classes",), [7], "data_classes.0", id="label-number"),
    pytest.param(("data_classes",), "pii", "data_classes", id="labels-string"),
    # body
    pytest.param(("body",), _nest(MAX_BODY_DEPTH + 1), "body", id="body-too-deep"),
    pytest.param(("body",), DELETE, "body", id="body-missing"),
    # signature
    pytest.param(("signature",), "A" * 85, "signature", id="signature-85-chars"),
    pytest.param(("signature",), "A" * 87, "signature", id="signature-87-chars"),
    pytest.param(("signature",), "A" * 84 + "==", "signature", id="signature-padded"),
    pytest.param(("signature",), "+" * 86, "signature", id="signature-standard-b64"),
    pytest.param(("signature",), "A" * 85 + "!", "signature", id="signature-bad-char"),
    pytest.param(("signature",), DELETE, "signature", id="signature-missing"),
    # version
    pytest.param(("version",), 1.0, "version", id="version-float"),
    pytest.param(("version",), True, "version", id="version-true"),
    pytest.param(("version",), 2, "version", id="version-2"),
    pytest.param(("version",), 0, "version", id="version-0"),
    pytest.param(("version",), "1", "version", id="version-string"),
    pytest.param(("version",), DELETE, "version", id="version-missing"),
    # explicit nulls: optional fields are omitted, never null
    pytest.param(("expires_at",), None, "expires_at", id="null-expires-at"),
    pytest.param(("payment",), None, "payment", id="null-payment"),
    pytest.param(("data_classes",), None, "data_classes", id="null-data-classes"),
    pytest.param(("id",), None, "id", id="null-id"),
    pytest.param(("signature",), None, "signature", id="null-signature"),
    pytest.param(
        ("payment", "amount_minor"), None, "payment.amount_minor", id="null-nested-amount-minor"
    ),
    # extra fields
    pytest.param(("priority",), "high", "priority", id="extra-field"),
    pytest.param(("Signature",), "x", "Signature", id="extra-field-case"),
]


@pytest.mark.parametrize(("path", "value", "field"), INVALID)
def test_invalid_field_is_refused_and_named(path: tuple[str, ...], value: Any, field: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(_mutated(path, value))
    assert caught.value.field == field
    assert caught.value.code == "malformed"


VALID = [
    pytest.param(("payment",), {"currency": "KWD", "amount": "1.001"}, id="kwd-three-decimals"),
    pytest.param(("payment",), {"currency": "JPY", "amount": "15"}, id="jpy-whole"),
    pytest.param(("payment",), {"currency": "CLF", "amount": "0.0001"}, id="clf-four-decimals"),
    pytest.param(("payment",), {"currency": "USD", "amount": "1.5"}, id="usd-one-decimal"),
    pytest.param(("payment",), {"currency": "USD", "amount_minor": 1}, id="amount-minor"),
    pytest.param(
        ("payment",), {"currency": "USD", "amount_minor": 2**53 - 1}, id="amount-minor-largest"
    ),
    pytest.param(
        ("payment",), {"currency": "USD", "amount": "9999999999999999.99"}, id="amount-largest"
    ),
    pytest.param(("payment",), DELETE, id="no-payment"),
    pytest.param(("expires_at",), DELETE, id="no-expiry"),
    pytest.param(("expires_at",), NOW + 1, id="expires-just-after-creation"),
    pytest.param(("data_classes",), DELETE, id="no-labels"),
    pytest.param(
        ("data_classes",), [f"c{i}" for i in range(MAX_DATA_CLASSES)], id="labels-at-limit"
    ),
    pytest.param(("data_classes",), ["a" * 32], id="label-at-length-limit"),
    pytest.param(("body",), None, id="body-null"),
    pytest.param(("body",), _nest(MAX_BODY_DEPTH), id="body-at-depth-limit"),
    pytest.param(
        ("body",), {"big": 2**53 - 1, "float": 0.5, "text": "é😀\u0000"}, id="body-scalars"
    ),
    pytest.param(("id",), "a" * 8, id="id-shortest"),
    pytest.param(("id",), "A" + "b._:-" * 25 + "xy", id="id-longest"),
    pytest.param(("nonce",), "f" * 64, id="nonce-longest"),
    pytest.param(("created_at",), 1, id="created-at-1"),
]


@pytest.mark.parametrize(("path", "value"), VALID)
def test_valid_variant_is_accepted(path: tuple[str, ...], value: Any) -> None:
    envelope = decode_envelope(_mutated(path, value)).envelope
    reencoded = orjson.loads(encode_envelope(envelope))
    if value is DELETE:
        assert path[0] not in reencoded
    else:
        assert reencoded[path[0]] == value


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [("USD", "12.50", 1250), ("KWD", "1.001", 1001), ("JPY", "15", 15), ("CLF", "0.0001", 1)],
)
def test_payment_minor_units(currency: str, amount: str, minor: int) -> None:
    assert PaymentIntent(currency=currency, amount=amount).minor_units == minor
    assert PaymentIntent(currency=currency, amount_minor=minor).minor_units == minor


def test_oversized_envelope_is_refused_with_its_own_code() -> None:
    raw = orjson.dumps(FULL)
    assert decode_envelope(raw, max_bytes=len(raw)).size == len(raw)
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(raw, max_bytes=len(raw) - 1)
    assert caught.value.code == "oversized"


def test_default_size_limit_applies() -> None:
    obj = copy.deepcopy(FULL)
    obj["body"] = "x" * (256 * 1024)
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(orjson.dumps(obj))
    assert caught.value.code == "oversized"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"id": ', id="truncated"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"envelope"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b'{"body": NaN}', id="nan"),
    ],
)
def test_undecodable_bytes_are_malformed(raw: bytes) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(raw)
    assert caught.value.code == "malformed"


def test_body_without_canonical_form_is_malformed() -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_envelope(_mutated(("body",), {"n": 2**63 - 1}))
    assert caught.value.code == "malformed"


def test_round_trip_sign_encode_decode_verify() -> None:
    envelope = sign_envelope(
        expires_at=NOW + DAY_MS,
        payment=PaymentIntent(currency="EUR", amount_minor=999),
        data_classes=("pii",),
    )
    decoded = decode_envelope(encode_envelope(envelope))
    assert decoded.envelope == envelope
    assert decoded.signed_bytes == envelope.signing_bytes()
    assert signature_valid(decoded)


def test_wire_key_order_and_whitespace_do_not_matter() -> None:
    obj = {key: FULL[key] for key in reversed(list(FULL))}
    raw = orjson.dumps(obj, option=orjson.OPT_INDENT_2)
    assert raw != orjson.dumps(FULL)
    assert signature_valid(decode_envelope(raw))


def _tampered(obj: dict[str, Any], path: tuple[Any, ...], value: Any) -> bool:
    """signature_valid after changing (or deleting) `path` in a copy of the wire object."""
    obj = copy.deepcopy(obj)
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        assert target[path[-1]] != value, "tampering must change the value"
        target[path[-1]] = value
    return signature_valid(decode_envelope(orjson.dumps(obj)))


MINOR_FORM = wire(
    sign_envelope(
        kind="payment",
        payment=PaymentIntent(currency="USD", amount_minor=1250),
        data_classes=("pii",),
    )
)

TAMPERING = [
    pytest.param(FULL, ("id",), "msg-tampered", id="id"),
    pytest.param(FULL, ("sender",), THIRD.did, id="sender"),
    pytest.param(FULL, ("recipient",), OTHER.did, id="recipient"),
    pytest.param(FULL, ("kind",), "request", id="kind"),
    pytest.param(FULL, ("created_at",), NOW + 1, id="created_at"),
    pytest.param(FULL, ("nonce",), "f" * 32, id="nonce"),
    pytest.param(FULL, ("expires_at",), NOW + MINUTE_MS + 1, id="expires_at"),
    pytest.param(FULL, ("expires_at",), DELETE, id="expires_at-removed"),
    pytest.param(FULL, ("payment", "amount"), "12.51", id="payment.amount"),
    pytest.param(FULL, ("payment", "amount"), "12.5", id="payment.amount-respelled"),
    pytest.param(FULL, ("payment", "currency"), "EUR", id="payment.currency"),
    pytest.param(FULL, ("payment",), DELETE, id="payment-removed"),
    pytest.param(MINOR_FORM, ("payment", "amount_minor"), 1251, id="payment.amount_minor"),
    pytest.param(
        MINOR_FORM,
        ("payment",),
        {"currency": "USD", "amount": "12.50"},
        id="payment-same-value-other-form",
    ),
    pytest.param(FULL, ("data_classes",), ["pii"], id="data_classes-label-removed"),
    pytest.param(FULL, ("data_classes",), ["financial_account", "pii"], id="data_classes-order"),
    pytest.param(FULL, ("data_classes",), DELETE, id="data_classes-removed"),
    pytest.param(FULL, ("body", "invoice", "lines", 0, "qty"), 3, id="body-nested-value"),
    pytest.param(FULL, ("body", "invoice", "note"), DELETE, id="body-nested-key-removed"),
    pytest.param(FULL, ("body",), None, id="body-nulled"),
]


@pytest.mark.parametrize(("original", "path", "value"), TAMPERING)
def test_tampering_any_signed_field_breaks_the_signature(
    original: dict[str, Any], path: tuple[Any, ...], value: Any
) -> None:
    assert signature_valid(decode_envelope(orjson.dumps(original)))
    assert _tampered(original, path, value) is False


def test_tampering_version_breaks_the_signature() -> None:
    # A decoder only accepts version 1 (see version-* above), so show directly that the
    # signature covers it: the same signature does not verify the object with version 2.
    unsigned = {key: value for key, value in FULL.items() if key != "signature"}
    signature = base64.urlsafe_b64decode(FULL["signature"] + "==")
    assert verify_signature(SENDER.public_key, canonical_json(unsigned), signature)
    assert not verify_signature(
        SENDER.public_key, canonical_json({**unsigned, "version": 2}), signature
    )


def test_signature_from_another_key_fails() -> None:
    forged = sign_envelope(OTHER, sender=SENDER.did)
    assert forged.sender == SENDER.did
    assert not signature_valid(decode_envelope(encode_envelope(forged)))


@pytest.mark.parametrize("byte", [0, 31, 32, 63])
def test_flipped_signature_bit_fails(byte: int) -> None:
    raw_signature = bytearray(base64.urlsafe_b64decode(FULL["signature"] + "=="))
    raw_signature[byte] ^= 0x01
    obj = {**FULL, "signature": base64.urlsafe_b64encode(raw_signature).rstrip(b"=").decode()}
    assert not signature_valid(decode_envelope(orjson.dumps(obj)))


def test_signature_has_one_spelling() -> None:
    # The last base64url character holds 2 signature bits and 4 spare bits; a variant with a
    # spare bit set decodes to the same 64 bytes and must be refused, not verified.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(FULL["signature"][-1])
    for spare in (1, 2, 4, 8):
        variant = FULL["signature"][:-1] + alphabet[last ^ spare]
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(orjson.dumps({**FULL, "signature": variant}))
        assert caught.value.field == "signature"


def test_envelope_is_frozen() -> None:
    envelope = sign_envelope()
    with pytest.raises(ValueError, match="frozen"):
        envelope.kind = "payment"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "payment", "is_payment"),
    [
        ("data", None, False),
        ("payment", None, True),
        ("request", PaymentIntent(currency="USD", amount="1"), True),
    ],
)
def test_is_payment(kind: str, payment: PaymentIntent | None, is_payment: bool) -> None:
    assert sign_envelope(kind=kind, payment=payment).is_payment is is_payment


def test_sender_is_the_signing_key() -> None:
    envelope = sign_envelope(RECIPIENT, recipient=SENDER.did)
    assert envelope.sender == RECIPIENT.did
    assert signature_valid(decode_envelope(encode_envelope(envelope)))
