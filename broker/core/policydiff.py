"""Policy changes in pure code: set one value by path, and diff two policies."""

from __future__ import annotations

from typing import Any

import orjson

from broker.core.policy import Policy, load_policy
from broker.errors import PolicyError


def set_value(policy: Policy, path: str, raw_value: str) -> Policy:
    """A copy of `policy` with the value at a dotted path replaced (validated as a whole).

    The value is JSON (`0.55`, `"temporary"`, `{"a": 1}`); a bare word is a string.
    """
    data = policy.model_dump(mode="json")
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise PolicyError(f"no policy section {part!r} in {path!r}")
        node = node[part]
    if parts[-1] not in node:
        raise PolicyError(f"no policy field {path!r}; see `trust-broker policy show`")
    try:
        value: Any = orjson.loads(raw_value)
    except orjson.JSONDecodeError:
        value = raw_value
    node[parts[-1]] = value
    return load_policy(data)


def diff(old: Policy, new: Policy) -> list[tuple[str, Any, Any]]:
    """(path, old value, new value) for every field that differs, version excluded."""
    changes: list[tuple[str, Any, Any]] = []
    _walk("", old.model_dump(mode="json"), new.model_dump(mode="json"), changes)
    return [change for change in changes if change[0] != "version"]


def _walk(prefix: str, old: Any, new: Any, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else key
            _walk(path, old.get(key), new.get(key), out)
        return
    if old != new:
        out.append((prefix, old, new))


def history_with_default(history: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The recorded versions, newest first, ending with version 1 when it is in range:
    the built-in default, in force until the first change and never written to the log."""
    if len(history) >= limit or any(entry.get("version") == 1 for entry in history):
        return history
    default = {
        "version": 1, "who": "(built in)", "at_ms": None,
        "why": "the default policy, in force until the first change",
        "policy": Policy().model_dump(mode="json", exclude={"version"}),
    }  # fmt: skip
    return [*history, default]
