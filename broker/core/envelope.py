"""The signed envelope every inter-agent message travels in; pure validation, no I/O.

Wire form: a JSON object (UTF-8). The signature is Ed25519 over the RFC 8785 canonical
bytes of that same object with its ``signature`` member removed. See docs/PROTOCOL.md.
"""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from broker.core.canonical import canonical_json, canonical_json_and_without, duplicate_key_path
from broker.core.currency import MINOR_UNITS, is_currency, to_minor
from broker.core.identity import AgentKey, cached_public_key, verify_signature
from broker.errors import EnvelopeError, IdentityError
from broker.reasons import Reason

PROTOCOL_VERSION = 1
DEFAULT_MAX_ENVELOPE_BYTES = 256 * 1024
MAX_BODY_DEPTH = 32
MAX_DATA_CLASSES = 16

MessageKind = Literal["data", "request", "response", "payment", "report"]
MESSAGE_KINDS: frozenset[str] = frozenset(MessageKind.__args__)  # type: ignore[attr-defined]

_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
_NONCE = re.compile(r"[0-9a-f]{32,64}")
_LABEL = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,17})(\.[0-9]{1,4})?")
# 86 characters carry 516 bits for 512; the last one's 4 spare bits must be zero, or 16
# spellings would decode to the same signature.
_B64URL_SIG = re.compile(r"[A-Za-z0-9_-]{85}[AQgw]")
_MAX_MINOR = 10**18


class PaymentIntent(BaseModel):
    """An amount the sender intends to move: exact decimal string or integer minor units."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    currency: str
    amount: str | None = None
    # Larger JSON integers have no RFC 8785 form, so they could never be signed.
    amount_minor: int | None = Field(default=None, le=2**53 - 1)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if not is_currency(value):
            raise ValueError("must be an active ISO 4217 code in upper case, e.g. 'USD'")
        return value

    @model_validator(mode="after")
    def _one_amount(self) -> PaymentIntent:
        if (self.amount is None) == (self.amount_minor is None):
            raise ValueError("give exactly one of 'amount' (decimal string) or 'amount_minor'")
        minor = self.minor_units
        if not 0 < minor < _MAX_MINOR:
            raise ValueError("amount must be positive and below 10^18 minor units")
        return self

    @property
    def minor_units(self) -> int:
        """The amount in integer minor units of the currency."""
        if self.amount_minor is not None:
            return self.amount_minor
        assert self.amount is not None
        if not _DECIMAL.fullmatch(self.amount):
            raise ValueError("amount must be a plain decimal string such as '12.50'")
        try:
            return to_minor(Decimal(self.amount), self.currency)
        except (InvalidOperation, ValueError) as exc:
            places = MINOR_UNITS[self.currency]
            raise ValueError(f"{self.currency} amounts have at most {places} decimals") from exc


class Envelope(BaseModel):
    """A signed inter-agent message. Frozen and strict: what was verified cannot change."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    version: int
    id: str
    sender: str
    recipient: str
    kind: MessageKind
    created_at: int = Field(description="Unix time in milliseconds")
    nonce: str
    expires_at: int | None = Field(default=None, description="Unix time in milliseconds")
    payment: PaymentIntent | None = None
    data_classes: tuple[str, ...] = ()
    body: Any
    signature: str

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != PROTOCOL_VERSION:
            raise ValueError(f"unsupported protocol version; this broker speaks {PROTOCOL_VERSION}")
        return value

    @field_validator("id")
    @classmethod
    def _message_id(cls, value: str) -> str:
        if not _MESSAGE_ID.fullmatch(value):
            raise ValueError("must be 8-128 characters of [A-Za-z0-9._:-], starting alphanumeric")
        return value

    @field_validator("sender", "recipient")
    @classmethod
    def _did(cls, value: str) -> str:
        try:
            cached_public_key(value)
        except IdentityError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("recipient")
    @classmethod
    def _not_sender(cls, value: str, info: ValidationInfo) -> str:
        # A field validator rather than a model check, so the error names the field.
        if value == info.data.get("sender"):
            raise ValueError("sender and recipient must differ")
        return value

    @field_validator("created_at", "expires_at")
    @classmethod
    def _timestamp(cls, value: int | None) -> int | None:
        if value is not None and not 0 < value < 2**53:
            raise ValueError("must be Unix time in milliseconds")
        return value

    @field_validator("expires_at")
    @classmethod
    def _after_creation(cls, value: int | None, info: ValidationInfo) -> int | None:
        created = info.data.get("created_at")
        if value is not None and created is not None and value <= created:
            raise ValueError("expires_at must be after created_at")
        return value

    @field_validator("nonce")
    @classmethod
    def _nonce(cls, value: str) -> str:
        if not _NONCE.fullmatch(value):
            raise ValueError("must be 32-64 lowercase hex characters (at least 128 random bits)")
        return value

    @field_validator("data_classes")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_DATA_CLASSES:
            raise ValueError(f"at most {MAX_DATA_CLASSES} labels")
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        for label in value:
            if not _LABEL.fullmatch(label):
                raise ValueError(f"label {label!r} must match [a-z][a-z0-9_]{{0,31}}")
        return value

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        check_json_depth(value, MAX_BODY_DEPTH)
        return value

    @field_validator("signature")
    @classmethod
    def _signature(cls, value: str) -> str:
        if not _B64URL_SIG.fullmatch(value):
            raise ValueError("must be the 64-byte Ed25519 signature in unpadded base64url")
        return value

    @property
    def is_payment(self) -> bool:
        """Payment-bearing: kind `payment` or any payment intent."""
        return self.kind == "payment" or self.payment is not None

    @property
    def signature_bytes(self) -> bytes:
        """The raw 64-byte signature."""
        return base64.urlsafe_b64decode(self.signature + "==")

    def signing_bytes(self) -> bytes:
        """RFC 8785 bytes of this envelope without its signature (absent fields omitted)."""
        return canonical_json(unsigned_fields(self))


def unsigned_fields(envelope: Envelope) -> dict[str, Any]:
    """The envelope as the JSON object that is signed: no signature, absent fields omitted."""
    data = envelope.model_dump(mode="json", exclude={"signature"}, exclude_defaults=True)
    if envelope.payment is not None:
        data["payment"] = envelope.payment.model_dump(exclude_none=True)
    return data


def check_json_depth(value: Any, limit: int) -> None:
    """Raise ValueError if `value` nests deeper than `limit` (iterative: no recursion bomb)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise ValueError(f"nests deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def sign_envelope(key: AgentKey, **fields: Any) -> Envelope:
    """Build, sign and validate an envelope from `key` (the sender is the key's DID)."""
    fields = {"version": PROTOCOL_VERSION, "sender": key.did, **fields}
    # Sign through the very function receivers use, so both sides agree on absent fields.
    draft = Envelope.model_construct(**fields)
    signature = key.sign(canonical_json(unsigned_fields(draft)))
    encoded = base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")
    return Envelope.model_validate({**fields, "signature": encoded})


class DecodedEnvelope:
    """An envelope parsed from the wire together with the exact bytes its signature covers
    and `wire`: the RFC 8785 bytes of the whole envelope as verified (signature included),
    which is what a recipient is given, whatever spelling the sender used."""

    __slots__ = ("envelope", "signed_bytes", "size", "wire")

    def __init__(
        self, envelope: Envelope, signed_bytes: bytes, size: int, wire: bytes = b""
    ) -> None:
        self.envelope = envelope
        self.signed_bytes = signed_bytes
        self.size = size
        self.wire = wire


def decode_envelope(raw: bytes, max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES) -> DecodedEnvelope:
    """Parse and validate wire bytes; raise EnvelopeError naming the field and the reason."""
    if len(raw) > max_bytes:
        raise EnvelopeError(
            f"envelope is {len(raw)} bytes, over the {max_bytes}-byte limit", code=Reason.OVERSIZED
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise EnvelopeError("envelope must be a JSON object")
    parsed = obj
    nulls = [name for name, value in obj.items() if value is None and name != "body"]
    if isinstance(obj.get("payment"), dict):
        nulls += [f"payment.{name}" for name, value in obj["payment"].items() if value is None]
    if nulls:
        raise EnvelopeError("optional fields are omitted, never null", field=nulls[0])
    if isinstance(obj.get("data_classes"), list):
        # JSON has no tuple; the model keeps labels immutable.
        obj = {**obj, "data_classes": tuple(obj["data_classes"])}
    try:
        envelope = Envelope.model_validate(obj)
    except ValidationError as exc:
        raise _envelope_error(exc) from None
    wire, signed_bytes = canonical_json_and_without(parsed, "signature")
    if wire != raw:
        # Not canonical as sent (the SDK sends canonical bytes: the fast path skips this).
        # Canonical text never has a duplicate key; anything else is checked for one,
        # since orjson kept only the last value and a recipient's parser may keep another.
        duplicate = duplicate_key_path(raw)
        if duplicate is not None:
            raise EnvelopeError(f"duplicate key {duplicate!r}", field=duplicate)
    else:
        wire = raw
    return DecodedEnvelope(envelope, signed_bytes, len(raw), wire)


def _envelope_error(exc: ValidationError) -> EnvelopeError:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "envelope"
    return EnvelopeError(f"{where}: {first['msg']}", field=where)


def encode_envelope(envelope: Envelope) -> bytes:
    """Wire bytes of an envelope: its RFC 8785 form, signature included (the broker
    delivers that form whatever was sent; sending it takes the decoder's fast path)."""
    data = unsigned_fields(envelope)
    data["signature"] = envelope.signature
    return canonical_json(data)


def signature_valid(decoded: DecodedEnvelope) -> bool:
    """Verify the Ed25519 signature of a decoded envelope against its sender's DID key."""
    env = decoded.envelope
    try:
        signature = env.signature_bytes
    except (binascii.Error, ValueError):
        return False
    return verify_signature(cached_public_key(env.sender), decoded.signed_bytes, signature)
