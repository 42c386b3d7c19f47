"""Which sensitive data classes a message body carries, whether or not the sender labelled them.

Pure and bounded: no I/O, no clock, no recursion. At most `MAX_SCAN_CHARS` characters of a
body are read and at most `MAX_CANDIDATES` places per data class are examined, so a body costs
a few milliseconds at worst. Every rule is chosen to stay silent on ordinary text (dates, phone
numbers, prices, versions, ids, hashes, timestamps); the reasoning sits beside each rule.

This guards against honest mistakes, not against a sender set on hiding data ("4111 1111 1111
111l" goes through): it makes unlabelled data visible to the privacy gate.

How the scan stays cheap: the body's strings are joined and mapped, one byte per character, to
a *shape* in which every ASCII digit is ``9`` and every capital ``A``. Each rule names the short
shapes its matches always start with ("13 digits", "4 digits, a dash, 4 digits"); ``bytes.find``
jumps from one such place to the next and the rule's regular expression runs only there.
Ordinary text has few such places, and a regex scan of the whole text costs several times more.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "DETECTABLE_CLASSES",
    "FINANCIAL_ACCOUNT",
    "MAX_CANDIDATES",
    "MAX_SCAN_CHARS",
    "NATIONAL_ID",
    "PAYMENT_CARD",
    "PII",
    "detect_data_classes",
    "iban_valid",
    "luhn_valid",
]

PAYMENT_CARD: Final = "payment_card"
NATIONAL_ID: Final = "national_id"
FINANCIAL_ACCOUNT: Final = "financial_account"
PII: Final = "pii"
DETECTABLE_CLASSES: Final = frozenset({PAYMENT_CARD, NATIONAL_ID, FINANCIAL_ACCOUNT, PII})

# The envelope size limit: a body can hold no more text than this anyway.
MAX_SCAN_CHARS: Final = 256 * 1024
# Near misses examined per data class before it is reported absent. Real data is confirmed at
# the first candidate; only a body with thousands of card-shaped timestamps or "@" signs in
# front of it could hide it, and such a sender could as well misspell the number.
MAX_CANDIDATES: Final = 2048

# --- Payment cards -------------------------------------------------------------------------
#
# A candidate is 13-19 digits (the issuer table below narrows that), in one run or in the
# groupings cards are printed in, with one separator (space, dash or dot) used throughout:
# 4-4-4-4, 4-4-4-1..3, 4-4-4-4-1..3 and 4-6-4/4-6-5 (Diners, Amex). Free groupings are not
# accepted: a list of small numbers ("4 5 6 7 ...") would add up to a "card" one time in ten.
_CARD = re.compile(
    r"(?<![0-9A-Za-z])"
    r"(?:[0-9]{13,19}"
    r"|[0-9]{4}(?P<s>[ .-])[0-9]{4}(?P=s)[0-9]{4}(?P=s)(?:[0-9]{4}(?:(?P=s)[0-9]{1,3})?|[0-9]{1,3})"
    r"|[0-9]{4}(?P<t>[ .-])[0-9]{6}(?P=t)[0-9]{4,5})"
    r"(?![0-9A-Za-z])",
    re.ASCII,
)

# One in ten random digit strings passes Luhn, so the issuer prefix and length carry most of
# the weight: (lowest prefix, highest prefix, allowed lengths), by first digit. Prefixes 0, 1
# (Unix-ms timestamps, snowflake ids), 7, 8 (SIM ICCIDs, which are Luhn-valid) and 9 belong to
# no card network; UATP (1...) is left out on purpose. No network issues 13 digits any more,
# and 13 is the EAN-13 barcode length, whose prefixes 40-44 (Germany), 50 (UK) and 690-699
# (China) would otherwise read as Visa and Maestro one time in ten.
_16 = frozenset({16})
_14_TO_19 = frozenset(range(14, 20))
_16_TO_19 = frozenset(range(16, 20))
_ISSUERS: Final[dict[str, tuple[tuple[str, str, frozenset[int]], ...]]] = {
    "2": (
        ("2221", "2720", _16),  # Mastercard 2-series
        ("2200", "2204", _16),  # Mir
    ),
    "3": (
        ("34", "34", frozenset({15})),  # American Express
        ("37", "37", frozenset({15})),  # American Express
        ("300", "305", _14_TO_19),  # Diners Club
        ("36", "36", _14_TO_19),  # Diners Club
        ("38", "39", _14_TO_19),  # Diners Club
        ("3528", "3589", _16_TO_19),  # JCB
    ),
    "4": (("4", "4", frozenset({16, 19})),),  # Visa
    "5": (
        ("51", "55", _16),  # Mastercard
        ("50", "50", _16_TO_19),  # Maestro
        ("56", "58", _16_TO_19),  # Maestro
    ),
    # Discover 6011/644-649/65, UnionPay 62, Maestro and RuPay share the 6s.
    "6": (("6", "6", _16_TO_19),),
}

# Luhn doubles every second digit from the right; a doubled digit contributes its digit sum.
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")

# --- US Social Security numbers -------------------------------------------------------------
#
# AAA-GG-SSSS with dashes is distinctive enough on its own. Nine bare digits, or 3-2-4 with
# spaces, are not: they are routing numbers, order numbers and phone numbers ("089 12 3456" is
# a Munich number), so those forms count only right after an SSN keyword ("SSN: 123456789"),
# or as the value of a JSON key that names an SSN ("ssn", "customerSsn", "social_security").
_SSN = re.compile(
    r"(?<![0-9A-Za-z+-])([0-9]{3})([- ]?)([0-9]{2})\2([0-9]{4})(?![0-9A-Za-z-])", re.ASCII
)
_SSN_KEYWORD = re.compile(
    r"(?<![A-Za-z])(?:ssn|social[ _-]?security)(?:[ _-]?(?:number|num|no))?[\s:#=.'\"-]{0,5}\Z",
    re.ASCII | re.IGNORECASE,
)
# Keys are matched after "customerSsn" has become "customer_ssn".
_SSN_KEY = re.compile(r"(?<![a-z])(?:ssn|social[ _-]?security)", re.ASCII)
_CAMEL_HUMP = re.compile(r"([a-z0-9])([A-Z])", re.ASCII)
_SSN_KEYWORD_REACH = 32  # longest keyword ("social_security_number") plus its punctuation

# --- IBANs ---------------------------------------------------------------------------------
#
# Country code, two check digits, then the BBAN: either in one run or in the printed form,
# groups of four separated by single spaces with a shorter last group. Capitals only: that is
# how IBANs are written, and it keeps the scan off ordinary words.
_IBAN = re.compile(
    r"(?<![0-9A-Za-z])[A-Z]{2}[0-9]{2}"
    r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)"
    r"(?![0-9A-Za-z])",
    re.ASCII,
)
_IBAN_FORM = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+", re.ASCII)
# Total IBAN length per country (SWIFT IBAN registry). A country not listed is not detected.
_IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN_LETTERS = str.maketrans({c: str(ord(c) - ord("A") + 10) for c in string.ascii_uppercase})

# --- Email addresses -----------------------------------------------------------------------
#
# local@domain.tld, matched around each "@". The domain needs a dot and a TLD of 2+ letters,
# so "user@localhost", "pkg@1.2.3" and "@mentions" are not addresses. Also not addresses:
# URL user info ("https://user@host", the local part follows a "/"), scp-style remotes
# ("git@github.com:org/repo", the domain runs straight into ":path") and retina image names
# ("icon@2x.png", a file extension where the TLD would be).
_EMAIL_LOCAL = re.compile(r"(?<![A-Za-z0-9._%+/-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}\Z", re.ASCII)
_EMAIL = re.compile(
    r"(?<=[A-Za-z0-9._%+-])@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})"
    r"(?![A-Za-z0-9-])(?!:\S)",
    re.ASCII,
)
_FILE_EXTENSIONS: Final = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "avif", "heic"}
)
_EMAIL_LOCAL_MAX = 64


# The shape: one byte per character (anything beyond ASCII becomes "?"). Dots become dashes,
# so one needle finds both; spaces stay, as a needle holding a byte as common as the space
# makes ``bytes.find`` crawl.
_SHAPE = bytes.maketrans(
    string.digits.encode() + string.ascii_uppercase.encode() + b".",
    b"9" * 10 + b"A" * 26 + b"-",
)
_ALNUM_RUN = re.compile(rb"[0-9A-Za-z]*")
# Ints of 9+ digits may be an SSN (under an "ssn" key) or a card; beyond 19 digits neither.
_INT_MIN = 10**8
_INT_LIMIT = 10**19


def detect_data_classes(body: Any) -> frozenset[str]:
    """The sensitive data classes found in a JSON body's strings, keys and integers."""
    text = "\n".join(_pieces(body, MAX_SCAN_CHARS))
    shape = _shape(text)
    digits = shape.count(b"9")
    found = {
        rule.label for rule in _RULES if digits >= rule.min_digits and _present(rule, text, shape)
    }
    if NATIONAL_ID not in found and digits >= _BARE_SSN.min_digits and _mentions_ssn(text):
        # A bare SSN needs its keyword in front, and in JSON the keyword is often the key.
        keyed = "\n".join([text, *_ssn_keyed_values(body, MAX_SCAN_CHARS)])
        if _present(_BARE_SSN, keyed, _shape(keyed)):
            found.add(NATIONAL_ID)
    return frozenset(found)


def luhn_valid(digits: str) -> bool:
    """True if `digits` (ASCII digits only, at least one) passes the Luhn checksum."""
    if not (digits.isascii() and digits.isdigit()):
        return False
    # The bytes of ASCII digits sum to the digits plus 48 each.
    kept = digits[-1::-2].encode()
    doubled = digits[-2::-2].translate(_LUHN_DOUBLED).encode()
    return (sum(kept) + sum(doubled) - 48 * len(digits)) % 10 == 0


def iban_valid(text: str) -> bool:
    """True if `text` is an IBAN (spaces ignored): known country, its length, mod-97 check."""
    if not text.isascii():
        return False
    iban = text.replace(" ", "").upper()
    if _IBAN_FORM.fullmatch(iban) is None or _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    # Check digits are 98 - (remainder), so 00, 01 and 99 are never issued.
    if not "02" <= iban[2:4] <= "98":
        return False
    return int((iban[4:] + iban[:4]).translate(_IBAN_LETTERS)) % 97 == 1


def _shape(text: str) -> bytes:
    return text.encode("ascii", "replace").translate(_SHAPE)


def _mentions_ssn(text: str) -> bool:
    lowered = text.lower()
    return "ssn" in lowered or "social" in lowered


def _pieces(body: Any, budget: int) -> list[str]:
    """The body's strings, dict keys and long integers, at most `budget` characters in all."""
    pieces: list[str] = []
    stack: list[Any] = [body]
    while stack and budget > 0:
        item = stack.pop()
        kind = type(item)  # exact types first: this loop runs for every node of every body
        if kind is str:
            piece = item
        elif kind is dict:
            try:
                piece = "\n".join(item)
            except TypeError:  # a Python dict with other than string keys
                piece = "\n".join(map(str, item))
            values = list(item.values())[:budget] if len(item) > budget else item.values()
            stack.extend(reversed(values))
            budget -= len(values)  # every node costs something: [[], [], ...] is bounded too
        elif kind is list or kind is tuple:
            stack.extend(reversed(item if len(item) <= budget else item[:budget]))
            budget -= 1 + len(item)
            continue
        elif kind is int:
            # Floats are skipped: a card number is never sent as one (it would lose digits).
            if not _INT_MIN <= abs(item) < _INT_LIMIT:
                continue
            piece = str(item)
        elif kind is float or kind is bool or item is None:
            continue
        else:
            plain = _plain(item)
            if plain is not None:
                stack.append(plain)
            continue
        pieces.append(piece if len(piece) <= budget else piece[:budget])
        budget -= 1 + len(piece)
    return pieces


def _ssn_keyed_values(body: Any, budget: int) -> list[str]:
    """ "SSN: value" for each string or int under a key that names an SSN."""
    pairs: list[str] = []
    stack: list[Any] = [body]
    while stack and budget > 0:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item[:budget])
            budget -= 1 + len(item)
        elif isinstance(item, dict):
            for key, value in list(item.items())[:budget]:
                scalar = _plain(value)
                if isinstance(scalar, str | int) and _names_ssn(str(key)):
                    pairs.append(f"SSN: {scalar}")
                else:
                    stack.append(value)
            budget -= 1 + len(item)
    return pairs


def _names_ssn(key: str) -> bool:
    return _SSN_KEY.search(_CAMEL_HUMP.sub(r"\1_\2", key).lower()) is not None


def _plain(item: Any) -> Any:
    """A subclass of a JSON type (StrEnum, IntEnum, OrderedDict, ...) as its base, else None."""
    if isinstance(item, bool):
        return None
    if isinstance(item, str):
        return str(item)
    if isinstance(item, int):
        return int(item)
    if isinstance(item, dict):
        return dict(item)
    if isinstance(item, list | tuple):
        return list(item)
    return None


@dataclass(frozen=True, slots=True)
class _Rule:
    """How one data class is found: where candidates start, their form, what confirms one."""

    label: str
    # Every match of `pattern` starts where one of these occurs in the shape.
    starts: tuple[bytes, ...]
    pattern: re.Pattern[str]
    confirm: Callable[[str, re.Match[str]], bool]
    min_digits: int = 0


def _present(rule: _Rule, text: str, shape: bytes) -> bool:
    """True if some candidate of `rule` in `text` is confirmed."""
    starts, find, end = rule.starts, shape.find, len(shape)
    # The next occurrence of each start (`end` once there is none), kept between candidates
    # so that the shape is read once per start in all.
    upcoming = [-1] * len(starts)
    pos = 0
    for _ in range(MAX_CANDIDATES):
        for index, next_at in enumerate(upcoming):
            if next_at < pos:
                found = find(starts[index], pos)
                upcoming[index] = found if found >= 0 else end
        at = min(upcoming)
        if at == end:
            return False
        match = rule.pattern.match(text, at)
        if match is None:
            # Candidates never start inside a word or number, so skip the rest of this one.
            run = _ALNUM_RUN.match(shape, at)
            pos = max(at + 1, run.end() if run else 0)
        elif rule.confirm(text, match):
            return True
        else:
            pos = max(at + 1, match.end())
    return False


def _card_confirmed(text: str, match: re.Match[str]) -> bool:
    sep = match["s"] or match["t"] or ""
    digits = match[0].replace(sep, "") if sep else match[0]
    # Most long numbers are timestamps and ids starting with 1: turn them away first.
    if digits[0] not in _ISSUERS or _continues_number(text, match.start(), match.end(), sep):
        return False
    # 4-4-4-4 followed by a short group is also a card and its CVV or expiry month.
    return _is_card(digits) or (bool(sep) and len(digits) > 16 and _is_card(digits[:16]))


def _continues_number(text: str, start: int, end: int, sep: str) -> bool:
    """True if the match is part of a longer number: "0.4532...", "...366.25", "12-4111...".

    A dot or dash next to a digit always joins (decimals, ranges, compound ids); a grouped
    candidate's own separator does too. A space does not join a plain run to a neighbour:
    "4111111111111111 12/27" is a card and its expiry date.
    """
    joiners = ".-" + sep
    before = text[max(0, start - 2) : start]
    after = text[end : end + 2]
    return (len(before) == 2 and before[1] in joiners and before[0] in string.digits) or (
        len(after) == 2 and after[0] in joiners and after[1] in string.digits
    )


def _is_card(digits: str) -> bool:
    length = len(digits)
    for low, high, lengths in _ISSUERS.get(digits[0], ()):
        if low <= digits[: len(low)] <= high and length in lengths:
            return luhn_valid(digits)
    return False


def _ssn_confirmed(text: str, match: re.Match[str]) -> bool:
    area, sep, group, serial = match.groups()
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    start = match.start()
    keyword = _SSN_KEYWORD.search(text, max(0, start - _SSN_KEYWORD_REACH), start)
    return sep == "-" or keyword is not None


def _iban_confirmed(text: str, match: re.Match[str]) -> bool:
    """Validate the leading groups that make up the country's IBAN length.

    The printed form may run into a following short word ("BE68 5390 0754 7034 EUR").
    """
    length = _IBAN_LENGTHS.get(match[0][:2])
    if length is None:
        return False
    size = 0
    groups = match[0].split(" ")
    for count, group in enumerate(groups, start=1):
        size += len(group)
        if size >= length:
            return size == length and iban_valid("".join(groups[:count]))
    return False


def _email_confirmed(text: str, match: re.Match[str]) -> bool:
    at = match.start()
    # A local part holds no "@", so the search need not look past the previous one (which
    # keeps "a@a@a@..." from reading the same characters over and over).
    low = max(at - _EMAIL_LOCAL_MAX, text.rfind("@", max(0, at - _EMAIL_LOCAL_MAX), at) + 1)
    return (
        match[1].lower() not in _FILE_EXTENSIONS and _EMAIL_LOCAL.search(text, low, at) is not None
    )


_RULES: Final = (
    _Rule(PAYMENT_CARD, (b"9" * 13, b"9999 9999", b"9999-9999"), _CARD, _card_confirmed, 13),
    _Rule(NATIONAL_ID, (b"999-99-9999",), _SSN, _ssn_confirmed, 9),
    _Rule(FINANCIAL_ACCOUNT, (b"AA99",), _IBAN, _iban_confirmed, 2),
    _Rule(PII, (b"@",), _EMAIL, _email_confirmed),
)
# Bare and spaced SSNs: run only on text that mentions an SSN keyword.
_BARE_SSN: Final = _Rule(NATIONAL_ID, (b"9" * 9, b"999 99 9999"), _SSN, _ssn_confirmed, 9)
