"""Agent key files: JSON {"did", "seed"} readable by the owner only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import orjson

from broker.core.identity import AgentKey
from broker.errors import ConfigError, IdentityError


def save_key(path: Path, key: AgentKey, *, overwrite: bool = False) -> None:
    """Write `key` to a 0600 file (refuses to overwrite unless told to). The file appears
    under its name whole or not at all: routers started together that share one broker
    key file must never read it half written."""
    data = orjson.dumps({"did": key.did, "seed": key.seed.hex()}) + b"\n"
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(draft, path)
        else:
            os.link(draft, path)  # fails if the name exists, and never shows a part
    except FileExistsError:
        raise ConfigError(f"{path} exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise ConfigError(f"cannot write key file {path}: {exc.strerror or exc}") from None
    finally:
        draft.unlink(missing_ok=True)


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
