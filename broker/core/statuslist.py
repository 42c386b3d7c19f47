"""W3C Bitstring Status List v1.0, purpose `revocation`: which issued credentials are revoked.

A list is a bitstring of at least 131,072 entries (16 KiB) in which bit `i` (counted from
the left-most bit of the first byte) is 1 when the credential with `statusListIndex` i
is revoked. It is published as `encodedList`: multibase base64url ('u', no padding) of
the GZIP-compressed bitstring, inside a BitstringStatusListCredential that the issuer
signs like any credential. Redis SETBIT numbers bits the same way, so the store keeps the
raw bitstring. Pure code.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from typing import Any

from broker.errors import EvidenceError

MIN_BITSTRING_BYTES = 16 * 1024  # 131,072 entries, the spec's herd-privacy minimum
# 16,777,216 entries; a larger list is refused before it is inflated further (zip bombs).
MAX_BITSTRING_BYTES = 2 * 1024 * 1024
STATUS_PURPOSE = "revocation"
LIST_TYPE = "BitstringStatusList"
LIST_CREDENTIAL_TYPE = "BitstringStatusListCredential"
ENTRY_TYPE = "BitstringStatusListEntry"


def encode_list(bitstring: bytes) -> str:
    """`encodedList` of a bitstring, zero-padded to the minimum length."""
    padded = bitstring.ljust(MIN_BITSTRING_BYTES, b"\0")
    # mtime=0 makes the bytes a function of the bitstring alone (and, at the default
    # level, equal to the spec's example for an empty list).
    compressed = gzip.compress(padded, compresslevel=6, mtime=0)
    return "u" + base64.urlsafe_b64encode(compressed).decode("ascii").rstrip("=")


def decode_list(encoded: Any) -> bytes:
    """The bitstring of an `encodedList`; EvidenceError when it is not a valid one."""
    if not isinstance(encoded, str) or not encoded.startswith("u"):
        raise _bad("encodedList is not multibase base64url ('u')")
    body = encoded[1:]
    try:
        compressed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing only
        bitstring = inflater.decompress(compressed, MAX_BITSTRING_BYTES + 1)
    except (binascii.Error, ValueError, zlib.error):
        raise _bad("encodedList is not base64url of GZIP data") from None
    if len(bitstring) > MAX_BITSTRING_BYTES or not inflater.eof:
        raise _bad("encodedList is too large or truncated")
    if len(bitstring) < MIN_BITSTRING_BYTES:
        raise _bad(f"a status list has at least {MIN_BITSTRING_BYTES * 8} entries")
    return bitstring


def bit_at(bitstring: bytes, index: int) -> bool:
    """Bit `index` of the bitstring, left-most bit of the first byte first."""
    if not 0 <= index < len(bitstring) * 8:
        raise _bad("statusListIndex is outside the status list")
    return bool(bitstring[index // 8] >> (7 - index % 8) & 1)


def with_bit(bitstring: bytes, index: int, value: bool = True) -> bytes:
    """A copy of the bitstring (padded to the minimum) with bit `index` set or cleared."""
    bits = bytearray(bitstring.ljust(max(MIN_BITSTRING_BYTES, index // 8 + 1), b"\0"))
    mask = 1 << (7 - index % 8)
    bits[index // 8] = bits[index // 8] | mask if value else bits[index // 8] & ~mask
    return bytes(bits)


def status_entry(list_credential_id: str, index: int) -> dict[str, Any]:
    """The `credentialStatus` of a credential at `index` of a revocation list."""
    return {
        "id": f"{list_credential_id}#{index}",
        "type": ENTRY_TYPE,
        "statusPurpose": STATUS_PURPOSE,
        "statusListIndex": str(index),
        "statusListCredential": list_credential_id,
    }


def list_subject(list_credential_id: str, bitstring: bytes) -> dict[str, Any]:
    """The `credentialSubject` of a BitstringStatusListCredential."""
    return {
        "id": f"{list_credential_id}#list",
        "type": LIST_TYPE,
        "statusPurpose": STATUS_PURPOSE,
        "encodedList": encode_list(bitstring),
    }


def entry_index(entry: Any) -> tuple[str, int]:
    """(status list credential id, index) of a revocation `credentialStatus` entry."""
    if not isinstance(entry, dict) or entry.get("type") != ENTRY_TYPE:
        raise _bad("credentialStatus is not a BitstringStatusListEntry")
    if entry.get("statusPurpose") != STATUS_PURPOSE:
        raise _bad("credentialStatus purpose is not revocation")
    raw, list_id = entry.get("statusListIndex"), entry.get("statusListCredential")
    if (
        not isinstance(raw, str)
        or not raw.isdigit()
        or len(raw) > 12
        or not isinstance(list_id, str)
    ):
        raise _bad(
            "credentialStatus needs statusListIndex (decimal string) and statusListCredential"
        )
    return list_id, int(raw)


def revoked_in(entry: Any, list_credential: dict[str, Any]) -> bool:
    """Whether the (already verified) status list credential marks `entry` revoked."""
    list_id, index = entry_index(entry)
    subject = list_credential.get("credentialSubject")
    if list_credential.get("id") != list_id or not isinstance(subject, dict):
        raise _bad("the status list presented is not the one the credential names")
    if subject.get("type") != LIST_TYPE or subject.get("statusPurpose") != STATUS_PURPOSE:
        raise _bad("not a revocation BitstringStatusList")
    return bit_at(decode_list(subject.get("encodedList")), index)


def _bad(message: str) -> EvidenceError:
    return EvidenceError(message, code="status_list_invalid")
