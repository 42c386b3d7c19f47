"""The privacy classifier: what it finds in a body, and the ordinary text it must leave alone."""

from __future__ import annotations

from collections import OrderedDict
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core.privacy import (
    DETECTABLE_CLASSES,
    FINANCIAL_ACCOUNT,
    MAX_CANDIDATES,
    MAX_SCAN_CHARS,
    NATIONAL_ID,
    PAYMENT_CARD,
    PII,
    detect_data_classes,
    iban_valid,
    luhn_valid,
)

CORPUS = Path(__file__).parent / "data" / "ordinary_text.txt"
ORDINARY_LINES = CORPUS.read_text(encoding="utf-8").splitlines()

CARD = frozenset({PAYMENT_CARD})
SSN = frozenset({NATIONAL_ID})
IBAN = frozenset({FINANCIAL_ACCOUNT})
EMAIL = frozenset({PII})
NOTHING: frozenset[str] = frozenset()


def _params(label: frozenset[str], cases: dict[str, Any]) -> list[Any]:
    return [pytest.param(body, label, id=case_id) for case_id, body in cases.items()]


CARDS = {
    # What the seeds' IATP sidecar misses: its pattern wants 16 digits in 4-4-4-4, with
    # spaces or dashes only.
    "iatp-miss-amex-plain": "378282246310005",
    "iatp-miss-amex-4-6-5-dashes": "3714-496353-98431",
    "iatp-miss-amex-4-6-5-spaces": "3782 822463 10005",
    "iatp-miss-amex-4-6-5-dots": "3714.496353.98431",
    "iatp-miss-dots-mastercard": "5555.5555.5555.4444",
    "iatp-miss-dots-visa": "4111.1111.1111.1111",
    "iatp-miss-diners-14": "30569309025904",
    "iatp-miss-diners-4-6-4": "3056 930902 5904",
    "iatp-miss-visa-19": "4111111111111111110",
    "iatp-miss-visa-19-grouped": "4111 1111 1111 1111 110",
    # the common forms
    "visa-spaces": "4111 1111 1111 1111",
    "visa-dashes": "4111-1111-1111-1111",
    "visa-plain": "4111111111111111",
    "visa-debit": "4000056655665556",
    "mastercard": "5555555555554444",
    "mastercard-5105": "5105 1051 0510 5100",
    "mastercard-2-series": "2223003122003222",
    "mir": "2200000000000004",
    "amex-plain-371449": "371449635398431",
    "discover": "6011111111111117",
    "discover-grouped": "6011 0009 9013 9424",
    "jcb": "3530111333300000",
    "jcb-3566": "3566-0020-2036-0505",
    "diners-38": "38520000023237",
    "unionpay": "6200000000000005",
    "unionpay-19": "6212345678901234569",
    "maestro": "6759649826438453",
    "dankort-50": "5019717010103742",
    # in context
    "in-prose": "Please charge my card 4111 1111 1111 1111, thanks.",
    "after-colon": "card:4111111111111111",
    "with-expiry-grouped": "4111 1111 1111 1111 12/27",
    "with-cvv-grouped": "4111 1111 1111 1111 123",
    "with-expiry-plain": "4111111111111111 12/27",
    "dashes-then-space-number": "4111-1111-1111-1111 3 items",
    "in-csv": "alice,4111111111111111,12/27",
    "in-json-text": '{"pan": "5555555555554444"}',
    "json-integer": 4111111111111111,
    "json-integer-amex": 378282246310005,
    "negative-integer": -4111111111111111,
    "second-candidate": "ref 4111 1111 1111 1112 then 4111 1111 1111 1111",
}

NOT_CARDS = {
    "luhn-fails": "4111 1111 1111 1112",
    "luhn-fails-amex": "378282246310006",
    "unix-ms-13-digits": "1795422107561",
    "unix-ms-luhn-valid": "1785422107560",
    "unix-ms-integer": 1795422107561,
    "prefix-8-luhn-valid": "8111 1111 1111 1112",
    "prefix-9-luhn-valid": "9111111111111110",
    "prefix-1-luhn-valid": "1111111111111117",
    "prefix-0-luhn-valid": "0111-1111-1111-1119",
    "prefix-7-luhn-valid": "7111 1111 1111 1114",
    "visa-18-digits": "411111111111111118",
    "amex-prefix-16-digits": "3750000000000006",
    "mastercard-prefix-15-digits": "555555555555442",
    "visa-13-is-an-ean-length": "4222222222222",
    "ean-13-germany-luhn-valid": "4006381333924",
    "ean-13-china-luhn-valid": "6901234567892",
    "imei-luhn-valid": "352099001761481",
    "iccid-luhn-valid": "8944500102198304826",
    "decimal-fraction": "0.4532015112830366",
    "decimal-integer-part": "4532015112830366.25",
    "negative-decimal": "-0.5555555555554444",
    "range": "12-4532015112830366",
    "inside-longer-run": "94111111111111111",
    "twenty-digits": "41111111111111111110",
    "glued-to-letters": "ref4111111111111111",
    "glued-to-letters-after": "4111111111111111abc",
    "mixed-separators": "4111 1111-1111 1111",
    "double-spaces": "4111  1111  1111  1111",
    "five-full-groups": "4111 1111 1111 1111 1111",
    "leading-group-continues": "3 4111 1111 1111 1111",
    "trailing-group-continues": "4111-1111-1111-1111-2027",
    "free-grouping": "41 11 11 11 11 11 11 11",
    "list-of-small-numbers": "4 5 6 7 8 9 10 11 12 13 14 15",
    "float-json": 4111111111111111.0,
    "bool-json": True,
    "huge-integer": 10**5000,
    "fullwidth-digits": "\uff14\uff11\uff11\uff11" * 4,
    "split-across-strings": ["4111", "1111", "1111", "1111"],
}


@pytest.mark.parametrize(("body", "expected"), _params(CARD, CARDS) + _params(NOTHING, NOT_CARDS))
def test_payment_cards(body: Any, expected: frozenset[str]) -> None:
    assert detect_data_classes(body) == expected


SSNS = {
    "dashed": "123-45-6789",
    "dashed-in-prose": "His number is 078-05-1121, keep it safe.",
    "dashed-area-899": "899-99-9999",
    "keyword-bare": "SSN: 123456789",
    "keyword-spaced": "ssn 123 45 6789",
    "keyword-hash": "SSN# 123456789",
    "keyword-long": "Social Security Number: 219099998",
    "keyword-json-text": '{"ssn": "123456789"}',
    "json-key": {"ssn": "123456789"},
    "json-key-snake": {"customer_ssn": "123 45 6789"},
    "json-key-camel": {"socialSecurityNumber": "219099998"},
    "json-key-camel-hump": {"customerSsn": "123456789"},
    "json-key-upper": {"userSSN": "123456789"},
    "json-key-among-others": {"name": "Ann", "ssn": "123456789", "city": "Oslo"},
    "json-key-integer": {"ssn": 123456789},
    "nested": {"applicant": {"id": [{"ssn": "123456789"}]}},
}

NOT_SSNS = {
    "area-000": "000-12-3456",
    "area-666": "666-12-3456",
    "area-9xx-itin": "912-34-5678",
    "area-999": "999-99-9999",
    "group-00": "123-00-4567",
    "serial-0000": "123-45-0000",
    "bare-no-keyword": "123456789",
    "spaced-no-keyword": "123 45 6789",
    "munich-phone": "Tel. 089 12 3456",
    "keyword-too-far": "SSN was verified by the clerk, reference 123456789",
    "keyword-then-eight-digits": "SSN 12345678",
    "keyword-then-ten-digits": "SSN 1234567890",
    "keyword-invalid-area": "SSN: 666123456",
    "keyword-in-word": "lessn 123456789",
    "inside-dashed-id": "ORD-123-45-6789",
    "dashed-id-continues": "123-45-6789-01",
    "international-prefix": "+123-45-6789",
    "longer-area": "1123-45-6789",
    "longer-serial": "123-45-67890",
    "mixed-separators": "123-45 6789",
    "json-key-other": {"order": "123456789"},
    "json-key-ssn-last4": {"ssn_last4": "6789"},
    "json-key-inside-word": {"classname": "123456789"},
    "json-key-not-above-value": {"ssn": {"status": "pending"}, "ref": "123456789"},
}


@pytest.mark.parametrize(("body", "expected"), _params(SSN, SSNS) + _params(NOTHING, NOT_SSNS))
def test_national_ids(body: Any, expected: frozenset[str]) -> None:
    assert detect_data_classes(body) == expected


# Examples from the SWIFT IBAN registry, one per country.
VALID_IBANS = {
    "GB": "GB82 WEST 1234 5698 7654 32",
    "DE": "DE89 3704 0044 0532 0130 00",
    "FR": "FR14 2004 1010 0505 0001 3M02 606",
    "NL": "NL91 ABNA 0417 1643 00",
    "BE": "BE68 5390 0754 7034",
    "CH": "CH93 0076 2011 6238 5295 7",
    "AT": "AT61 1904 3002 3457 3201",
    "ES": "ES91 2100 0418 4502 0005 1332",
    "IT": "IT60 X054 2811 1010 0000 0123 456",
    "NO": "NO93 8601 1117 947",
    "PL": "PL61 1090 1014 0000 0712 1981 2874",
    "PT": "PT50 0002 0123 1234 5678 9015 4",
    "IE": "IE29 AIBK 9311 5212 3456 78",
    "SE": "SE45 5000 0000 0583 9825 7466",
    "DK": "DK50 0040 0440 1162 43",
    "FI": "FI21 1234 5600 0007 85",
    "LU": "LU28 0019 4006 4475 0000",
}

IBANS = {
    **{f"printed-{country}": iban for country, iban in VALID_IBANS.items()},
    **{f"compact-{country}": iban.replace(" ", "") for country, iban in VALID_IBANS.items()},
    "in-prose": "Please pay to GB82 WEST 1234 5698 7654 32 by Friday.",
    "runs-into-currency": "BE68 5390 0754 7034 EUR",
    "runs-into-word": "BE68 5390 0754 7034 EURO",
    "json-value": {"iban": "DE89370400440532013000"},
}

NOT_IBANS = {
    "wrong-check-digits": "GB82 WEST 1234 5698 7654 33",
    "transposed-digits": "DE89 3704 0044 0532 0130 00".replace("0532", "0523"),
    "too-short-for-country": "DE89 3704 0044 0532 0130 0",
    "too-long-for-country": "DE893704004405320130001",
    "unknown-country": "XX82 WEST 1234 5698 7654 32",
    "lower-case": "gb82 west 1234 5698 7654 32",
    "irregular-spacing": "GB82 WEST12 3456 98765432",
    "glued-to-letters": "xGB82WEST12345698765432",
    "ibans-in-prose": "Germany's IBANs have 22 characters and start with DE89.",
}


@pytest.mark.parametrize(("body", "expected"), _params(IBAN, IBANS) + _params(NOTHING, NOT_IBANS))
def test_ibans(body: Any, expected: frozenset[str]) -> None:
    assert detect_data_classes(body) == expected


EMAILS = {
    "plain": "alice@example.com",
    "in-prose": "Write to bob.smith+tag@mail.example.co.uk, he answers.",
    "mailto": "mailto:carol@example.org",
    "angle-brackets": "Dave <dave@example.io>",
    "end-of-sentence": "Contact eve@example.com.",
    "colon-then-space": "Owner alice@example.com: approved",
    "upper-case": "ALICE@EXAMPLE.COM",
    "json-key": {"alice@example.com": {"role": "admin"}},
    "after-many-at-signs": "@" * 1000 + " alice@example.com",
}

NOT_EMAILS = {
    "mention": "thanks @alice",
    "localhost": "user@localhost",
    "no-dot": "admin@server",
    "one-letter-tld": "a@b.c",
    "numeric-tld": "pkg@1.2.3",
    "scoped-package": "@types/node@20.11.1",
    "scp-remote": "git@github.com:acme/broker.git",
    "url-user-info": "https://deploy@example.com/acme/broker.git",
    "retina-image": "icon@2x.png",
    "spaced-at": "name @ example.com",
    "empty-local": "@example.com",
    "only-at-signs": "@" * 5000,
}


@pytest.mark.parametrize(
    ("body", "expected"), _params(EMAIL, EMAILS) + _params(NOTHING, NOT_EMAILS)
)
def test_email_addresses(body: Any, expected: frozenset[str]) -> None:
    assert detect_data_classes(body) == expected


@pytest.mark.parametrize("line", ORDINARY_LINES)
def test_ordinary_line_has_no_data_class(line: str) -> None:
    assert detect_data_classes(line) == NOTHING


def test_ordinary_corpus_as_one_body() -> None:
    assert len(ORDINARY_LINES) >= 60
    assert detect_data_classes("\n".join(ORDINARY_LINES)) == NOTHING
    assert detect_data_classes({"lines": ORDINARY_LINES, "count": len(ORDINARY_LINES)}) == NOTHING


def test_every_class_at_once() -> None:
    body = {
        "payer": {"email": "alice@example.com", "ssn": "123456789"},
        "card": {"number": 4111111111111111, "expiry": "12/27"},
        "payout": ["GB82 WEST 1234 5698 7654 32"],
    }
    assert detect_data_classes(body) == DETECTABLE_CLASSES


@pytest.mark.parametrize(
    "body",
    [None, 0, 1.5, True, "", [], {}, "plain words only", {"n": [1, 2, 3]}],
    ids=[
        "null",
        "zero",
        "float",
        "bool",
        "empty-string",
        "empty-list",
        "empty-dict",
        "prose",
        "small",
    ],
)
def test_bodies_without_data(body: Any) -> None:
    assert detect_data_classes(body) == NOTHING


def test_deep_nesting_is_walked_without_recursion() -> None:
    body: Any = "4111 1111 1111 1111"
    for _ in range(100_000):
        body = [body]
    assert detect_data_classes(body) == CARD


def test_scan_stops_at_the_envelope_size_limit() -> None:
    padding = "x" * MAX_SCAN_CHARS
    assert detect_data_classes(["4111111111111111", padding]) == CARD
    assert detect_data_classes([padding, "4111111111111111"]) == NOTHING
    assert detect_data_classes([padding, "alice@example.com" + " " * 100]) == NOTHING
    assert detect_data_classes([[]] * (MAX_SCAN_CHARS + 10) + ["alice@example.com"]) == NOTHING


def test_examination_stops_after_max_candidates_near_misses() -> None:
    # The bound that keeps a hostile body cheap; honest data is confirmed at its first try.
    assert detect_data_classes("@" * (MAX_CANDIDATES - 1) + " alice@example.com") == EMAIL
    assert detect_data_classes("@" * (MAX_CANDIDATES + 1) + " alice@example.com") == NOTHING


class _Pan(StrEnum):
    TEST = "4111 1111 1111 1111"


class _Ssn(IntEnum):
    TEST = 123456789


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(_Pan.TEST, CARD, id="str-enum"),
        pytest.param({"name": "Ann", "ssn": _Ssn.TEST}, SSN, id="int-enum-under-ssn-key"),
        pytest.param(OrderedDict(contact="alice@example.com"), EMAIL, id="ordered-dict"),
        pytest.param(("x", ("4111111111111111",)), CARD, id="tuples"),
        pytest.param({4111111111111111: "card as key"}, CARD, id="int-key"),
        pytest.param({None: "alice@example.com"}, EMAIL, id="none-key"),
        pytest.param({"nested": [{"deeper": [{"iban": "NL91ABNA0417164300"}]}]}, IBAN, id="deep"),
        pytest.param(object(), NOTHING, id="not-json"),
    ],
)
def test_python_values_beyond_plain_json(body: Any, expected: frozenset[str]) -> None:
    assert detect_data_classes(body) == expected


def test_text_that_is_not_utf8_encodable() -> None:
    assert detect_data_classes("\ud800 4111 1111 1111 1111 \u00e9") == CARD


LUHN = [
    ("0", True),
    ("18", True),
    ("79927398713", True),
    ("79927398710", False),
    ("4111111111111111", True),
    ("4111111111111112", False),
    ("378282246310005", True),
    ("", False),
    ("4111 1111 1111 1111", False),
    ("4111-1111", False),
    ("\u0661\u0668", False),  # Arabic-Indic digits are digits to str.isdigit, not to Luhn
]


@pytest.mark.parametrize(("digits", "valid"), LUHN, ids=[repr(d) for d, _ in LUHN])
def test_luhn_table(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


def _with_check_digit(payload: str) -> str:
    return next(payload + d for d in "0123456789" if luhn_valid(payload + d))


digit_strings = st.text(alphabet="0123456789", min_size=1, max_size=30)


@given(digit_strings)
def test_exactly_one_check_digit_makes_any_payload_valid(payload: str) -> None:
    assert sum(luhn_valid(payload + d) for d in "0123456789") == 1


@given(digit_strings, st.data())
def test_changing_one_digit_breaks_the_checksum(payload: str, data: st.DataObject) -> None:
    number = _with_check_digit(payload)
    position = data.draw(st.integers(min_value=0, max_value=len(number) - 1))
    replacement = data.draw(st.sampled_from("0123456789").filter(lambda d: d != number[position]))
    assert not luhn_valid(number[:position] + replacement + number[position + 1 :])


IBAN_TABLE = [
    *[(iban, True) for iban in VALID_IBANS.values()],
    ("GB82WEST12345698765432", True),
    ("gb82 west 1234 5698 7654 32", True),  # the helper normalises case; the scan does not
    ("GB82 WEST 1234 5698 7654 33", False),
    ("GB82 WEST 1234 5698 7654 3", False),
    ("XX82 WEST 1234 5698 7654 32", False),
    ("GB82 WEST 1234 5698 7654 3!", False),
    ("GBXX WEST 1234 5698 7654 32", False),
    ("", False),
    ("GB", False),
    ("GB82 WÉST 1234 5698 7654 32", False),
    # Check digits run 02-98: 01 passes mod 97 wherever 98 does, but is never issued.
    ("NO98 8601 0000 029", True),
    ("NO01 8601 0000 029", False),
]


@pytest.mark.parametrize(("text", "valid"), IBAN_TABLE, ids=[t or "empty" for t, _ in IBAN_TABLE])
def test_iban_table(text: str, valid: bool) -> None:
    assert iban_valid(text) is valid
