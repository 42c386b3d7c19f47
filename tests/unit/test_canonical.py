"""RFC 8785 canonical bytes: the RFC's own examples and byte-identity with the reference."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from broker.core.canonical import MAX_CANONICAL_DEPTH, canonical_json, canonical_json_and_without
from broker.errors import EnvelopeError


def test_rfc8785_section_3_2_2_example() -> None:
    # RFC 8785 section 3.2.2: the input as published, then the canonical output.
    source = r"""{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"""
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_rfc8785_section_3_2_3_sorts_keys_by_utf16_code_units() -> None:
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = list(json.loads(canonical_json(value)).values())
    assert order == [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ]


# RFC 8785 appendix B: IEEE-754 bit patterns and their canonical text.
NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), NUMBERS, ids=[text for _, text in NUMBERS])
def test_rfc8785_appendix_b_numbers(bits: str, text: str) -> None:
    (number,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical_json(number) == text.encode("ascii")
    assert canonical_json([number]) == f"[{text}]".encode("ascii")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(1.0, b"1", id="integral-float"),
        pytest.param(-0.0, b"0", id="negative-zero"),
        pytest.param(1e21, b"1e+21", id="1e21"),
        pytest.param(1e20, b"100000000000000000000", id="1e20"),
        pytest.param(1e-7, b"1e-7", id="1e-7"),
        pytest.param(0.1, b"0.1", id="0.1"),
        pytest.param(2**53 - 1, b"9007199254740991", id="max-safe-int"),
        pytest.param(-(2**53 - 1), b"-9007199254740991", id="min-safe-int"),
        pytest.param({"b": 1, "a": [True, None]}, b'{"a":[true,null],"b":1}', id="sorted"),
        pytest.param("\x00\x1f\x7f", b'"\\u0000\\u001f\x7f"', id="control-chars"),
        pytest.param("\u2028/", '"\u2028/"'.encode(), id="no-gratuitous-escapes"),
        pytest.param({"x": {"z": 1.5, "y": 2}}, b'{"x":{"y":2,"z":1.5}}', id="float-nested"),
    ],
)
def test_known_answers(value: Any, text: bytes) -> None:
    assert canonical_json(value) == text


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param(-math.inf, id="-inf"),
        pytest.param(2**53, id="int-2^53"),
        pytest.param(-(2**53), id="int--2^53"),
        pytest.param({"n": 10**30}, id="huge-int-nested"),
        pytest.param({1: "int key"}, id="non-string-key"),
        pytest.param({"a": {1, 2}}, id="set"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param({"k": ["\udfff"]}, id="lone-surrogate-nested"),
    ],
)
def test_values_without_a_canonical_form_raise_envelope_error(value: Any) -> None:
    with pytest.raises(EnvelopeError):
        canonical_json(value)


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("leaf", [1, 1.5, "\u00e9"], ids=["fast-path", "float", "text"])
def test_depth_at_the_limit_is_encoded(leaf: Any) -> None:
    assert canonical_json(_nested(MAX_CANONICAL_DEPTH, leaf))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(_nested(MAX_CANONICAL_DEPTH + 1, 1), id="just-over"),
        pytest.param(_nested(5_000, 1), id="far-over"),
        # A float sends the value to the recursive reference encoder; the limit must
        # still hold there (it once overflowed Python's stack instead).
        pytest.param([_nested(5_000, 1), 1.5], id="far-over-with-float"),
        pytest.param({"\u00e9": _nested(MAX_CANONICAL_DEPTH + 1, 1)}, id="over-non-ascii-key"),
    ],
)
def test_depth_over_the_limit_raises_envelope_error(value: Any) -> None:
    with pytest.raises(EnvelopeError, match="deeper"):
        canonical_json(value)


SAFE_INT = 2**53 - 1
_signable_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE_INT, max_value=SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    # Default text already mixes ASCII, control characters and the astral planes.
    | st.text()
    | st.text(alphabet=st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF))
)
_keys = st.text(max_size=8) | st.sampled_from(["a", "b", "\ufb33", "\U0001f600", "\x00", "Z"])


def _json(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(_keys, children, max_size=5)
        ),
        max_leaves=30,
    )


signable_values = _json(_signable_scalars)
# Integers beyond 2^53 have no canonical form: the reference refuses them, and so must we.
json_values = _json(_signable_scalars | st.integers(min_value=-(2**64), max_value=2**64))


@given(json_values)
def test_canonical_json_is_byte_identical_to_reference(value: Any) -> None:
    try:
        reference = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(EnvelopeError):
            canonical_json(value)
    else:
        assert canonical_json(value) == reference


_ascii_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-SAFE_INT, max_value=SAFE_INT) | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=0x7F)), children, max_size=5)
    ),
    max_leaves=30,
)


@given(_ascii_json)
def test_fast_path_is_byte_identical_to_reference(value: Any) -> None:
    # Only floats, unsafe integers and non-ASCII keys leave orjson's fast path; this
    # strategy has none of them, so every example exercises it.
    assert canonical_json(value) == rfc8785.dumps(value)


@given(st.dictionaries(_keys, signable_values, min_size=2, max_size=8), st.randoms())
def test_canonical_bytes_do_not_depend_on_key_order(value: dict[str, Any], rnd: Any) -> None:
    items = list(value.items())
    rnd.shuffle(items)
    expected = canonical_json(value)
    assert canonical_json(dict(items)) == expected
    assert canonical_json(dict(reversed(items))) == expected


@given(st.dictionaries(_keys, signable_values, max_size=8), st.text(), st.booleans())
def test_with_and_without_one_member_are_each_canonical(
    value: dict[str, Any], signature: str, present: bool
) -> None:
    # The decoder's one walk must give exactly what two canonical_json calls give.
    whole = {**value, "signature": signature} if present else dict(value)
    rest = {k: v for k, v in whole.items() if k != "signature"}
    assert canonical_json_and_without(whole, "signature") == (
        canonical_json(whole), canonical_json(rest),
    )  # fmt: skip
