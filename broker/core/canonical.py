"""RFC 8785 (JSON Canonicalization Scheme) bytes: the exact bytes that get signed."""

from __future__ import annotations

import json
from typing import Any

import orjson
import rfc8785

from broker.errors import EnvelopeError

# JCS writes integers in [-(2^53-1), 2^53-1] as plain decimals; larger ones have no exact
# IEEE-754 form and are refused.
_SAFE_INT = 2**53 - 1
# Deeper values are refused outright: the reference encoder recurses, and a signed
# structure has no business nesting this deep.
MAX_CANONICAL_DEPTH = 64


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical encoding of a JSON-compatible value."""
    if _orjson_is_canonical(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            # Lone surrogates: the reference encoder below refuses them with its own error.
            pass
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        # Non-finite floats, integers beyond IEEE-754 precision and non-JSON types have no
        # canonical form, so they can never be signed or verified.
        raise EnvelopeError(f"value has no RFC 8785 canonical form: {exc}") from exc


def canonical_json_and_without(value: dict[str, Any], key: str) -> tuple[bytes, bytes]:
    """The RFC 8785 bytes of `value`, and of `value` without its string member `key`
    (an envelope as delivered, and the bytes its signature covers), with one walk of the
    tree: dropping a string member under an ASCII key changes nothing the walk checks."""
    rest = {name: item for name, item in value.items() if name != key}
    if type(value.get(key, "")) is str and key.isascii() and _orjson_is_canonical(value):
        try:
            options = orjson.OPT_SORT_KEYS
            return orjson.dumps(value, option=options), orjson.dumps(rest, option=options)
        except orjson.JSONEncodeError:
            pass  # lone surrogates: canonical_json's reference encoder refuses them
    return canonical_json(value), canonical_json(rest)


def _orjson_is_canonical(value: Any) -> bool:
    """True when orjson's sorted output is byte-identical to RFC 8785 for `value`.

    That holds without floats (JCS formats numbers the ECMAScript way), with integers in
    the safe range, and with ASCII object keys (JCS sorts keys by UTF-16 code units, orjson
    by code points; the orders differ only above U+E000). String escaping is identical.
    tests/unit/test_canonical.py checks the equivalence with hypothesis.

    The walk always finishes, even once the answer is False, so that the depth limit also
    guards the recursive reference encoder.
    """
    canonical = True
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            canonical = canonical and -_SAFE_INT <= item <= _SAFE_INT
            continue
        if kind is not dict and kind is not list and kind is not tuple:
            canonical = False
            continue
        if depth >= MAX_CANONICAL_DEPTH:
            raise EnvelopeError(f"value nests deeper than {MAX_CANONICAL_DEPTH} levels")
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str or not key.isascii():
                    canonical = False
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)
    return canonical


class _Members(dict[str, Any]):
    """A parsed JSON object that remembers the first key it saw twice."""

    __slots__ = ("duplicate",)
    duplicate: str | None


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    obj = _Members(pairs)
    obj.duplicate = None
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                obj.duplicate = key
                break
            seen.add(key)
    return obj


def duplicate_key_path(raw: bytes | str) -> str | None:
    """The dotted path of the first key that appears twice in one object of the JSON
    text `raw` (e.g. ``body.amount``; array items by index), or None.

    orjson, like most parsers, silently keeps one of the values; parsers in other
    languages keep another, so a document with a duplicate key means different things
    to different readers and is refused wherever the broker accepts one. This is the
    slow path (the standard library's parser, with a hook): callers run it only on text
    that is not already canonical, which never has duplicates. `raw` must be JSON that
    orjson accepted."""
    try:
        root = json.loads(raw, object_pairs_hook=_members)
    except (RecursionError, ValueError) as exc:
        raise EnvelopeError(
            f"JSON too deep or too large to check for duplicate keys: {exc}"
        ) from None
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _Members):
            if item.duplicate is not None:
                return f"{path}.{item.duplicate}" if path else item.duplicate
            children = [(v, f"{path}.{k}" if path else k) for k, v in item.items()]
        elif isinstance(item, list):
            children = [(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(item)]
        else:
            continue
        stack.extend(reversed(children))
    return None


def loads_strict(raw: bytes | str) -> Any:
    """Parse JSON text, refusing a duplicate key anywhere (EnvelopeError, code
    `malformed`, `field` naming the key path); orjson.JSONDecodeError for text that is
    not JSON at all. For documents off the hot path (handshake requests, API bodies)."""
    value = orjson.loads(raw)
    if isinstance(value, dict | list):
        path = duplicate_key_path(raw)
        if path is not None:
            raise EnvelopeError(f"duplicate key {path!r}", field=path)
    return value
