"""W3C Bitstring Status List: encoding, bit order, bounds."""

from __future__ import annotations

import base64
import gzip

import pytest

from broker.core.statuslist import (
    MIN_BITSTRING_BYTES,
    bit_at,
    decode_list,
    encode_list,
    list_subject,
    revoked_in,
    status_entry,
    with_bit,
)
from broker.errors import EvidenceError

# The specification's example encodedList: an empty list of 131,072 entries.
SPEC_EMPTY = "uH4sIAAAAAAAAA-3BMQEAAADCoPVPbQwfoAAAAAAAAAAAAAAAAAAAAIC3AYbSVKsAQAAA"


def test_empty_list_matches_the_specification_example() -> None:
    assert encode_list(b"") == SPEC_EMPTY
    assert decode_list(SPEC_EMPTY) == bytes(MIN_BITSTRING_BYTES)


@pytest.mark.parametrize(
    ("index", "byte", "value"),
    [(0, 0, 0x80), (7, 0, 0x01), (8, 1, 0x80), (94567, 11820, 0x01), (131071, 16383, 0x01)],
)
def test_index_zero_is_the_left_most_bit(index: int, byte: int, value: int) -> None:
    bits = with_bit(b"", index)
    assert bits[byte] == value and sum(bits) == value
    assert bit_at(bits, index) and not bit_at(bits, index ^ 1)
    assert bit_at(decode_list(encode_list(bits)), index)
    assert not bit_at(with_bit(bits, index, False), index)


@pytest.mark.parametrize(
    "encoded",
    [
        None,
        "zabc",
        "u!!!",
        "u" + base64.urlsafe_b64encode(b"not gzip").decode(),
        "u" + base64.urlsafe_b64encode(gzip.compress(bytes(100))).decode().rstrip("="),
        "u" + base64.urlsafe_b64encode(gzip.compress(bytes(3 * 1024 * 1024))).decode(),
    ],
    ids=["none", "base58", "bad-b64", "not-gzip", "too-short", "bomb"],
)
def test_bad_lists_are_refused(encoded: object) -> None:
    with pytest.raises(EvidenceError) as caught:
        decode_list(encoded)
    assert caught.value.code == "status_list_invalid"


def test_revoked_in_reads_the_entry() -> None:
    list_id = "urn:uuid:list-1"
    credential = {"id": list_id, "credentialSubject": list_subject(list_id, with_bit(b"", 5))}
    assert revoked_in(status_entry(list_id, 5), credential)
    assert not revoked_in(status_entry(list_id, 6), credential)
    with pytest.raises(EvidenceError):
        revoked_in(status_entry("urn:uuid:other", 5), credential)
    with pytest.raises(EvidenceError):
        revoked_in(status_entry(list_id, MIN_BITSTRING_BYTES * 8), credential)
    with pytest.raises(EvidenceError):
        revoked_in({**status_entry(list_id, 5), "statusPurpose": "suspension"}, credential)
