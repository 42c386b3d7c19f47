"""Agent key files: JSON {"did", "seed"} readable by the owner only."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from broker.core.identity import AgentKey
from broker.errors import ConfigError, IdentityError


def save_key(path: Path, key: AgentKey, *, overwrite: bool = False) -> None:
    """Write `key` to a new 0600 file (refuses to overwrite unless told to)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; pass --force to overwrite it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps({"did": key.did, "seed": key.seed.hex()}) + b"\n")


def load_key(path: Path) -> AgentKey:
    """Read a key file written by save_key; its DID must match its seed."""
    try:
        data = orjson.loads(path.read_bytes())
        key = AgentKey(bytes.fromhex(data["seed"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read key file {path}: {type(exc).__name__}") from None
    except IdentityError as exc:
        raise ConfigError(f"key file {path} holds no valid key: {exc}") from None
    if data.get("did") != key.did:
        raise ConfigError(f"key file {path}: the DID does not match the key")
    return key
