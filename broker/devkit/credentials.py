"""The local servers' generated logins: no default credentials anywhere.

`scripts/servers start` creates this file on first start, mode 0600, in the run
directory, and configures the servers from it: RabbitMQ gets these users (and no
`guest`), Redis `requirepass`. The CLI reads it for its defaults; TRUST_* variables still
override. Rotating a password is `scripts/servers rotate`, which writes new ones here and
into the running servers (README, "Credentials").
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from broker.errors import ConfigError

FILE_NAME = "credentials.json"
# The service accounts of one deployment; agents get their own users from provisioning.
ADMIN, ROUTER, NEGOTIATOR = "trust-admin", "trust-router", "trust-negotiator"


@dataclass(frozen=True)
class Credentials:
    """Every generated secret of a local deployment; passwords never appear in repr."""

    admin_password: str = field(repr=False)
    router_password: str = field(repr=False)
    negotiator_password: str = field(repr=False)
    redis_password: str = field(repr=False)
    admin_user: str = ADMIN
    router_user: str = ROUTER
    negotiator_user: str = NEGOTIATOR

    @classmethod
    def generate(cls) -> Credentials:
        """Fresh random passwords: hex (192 bits), so they fit in URLs and config files
        and never start with '-', which rabbitmqctl would read as an option."""
        return cls(*(secrets.token_hex(24) for _ in range(4)))

    def rotated(self) -> Credentials:
        """The same users with new passwords."""
        fresh = Credentials.generate()
        return Credentials(
            fresh.admin_password, fresh.router_password, fresh.negotiator_password,
            fresh.redis_password, self.admin_user, self.router_user, self.negotiator_user,
        )  # fmt: skip

    def accounts(self) -> dict[str, str]:
        """Role -> RabbitMQ username, as broker.ops.provision grants them."""
        return {"admin": self.admin_user, "router": self.router_user,
                "negotiator": self.negotiator_user}  # fmt: skip


def path_in(run_dir: Path) -> Path:
    """Where the run directory keeps its credentials."""
    return run_dir / FILE_NAME


def load(run_dir: Path) -> Credentials | None:
    """The run directory's credentials, or None when the servers never started there."""
    path = path_in(run_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; delete it to generate new ones") from None
    try:
        return Credentials(**data)
    except TypeError as exc:
        raise ConfigError(f"{path} is not a credentials file ({exc})") from None


def save(run_dir: Path, creds: Credentials) -> Path:
    """Write the file readable by its owner only (0600), atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = path_in(run_dir)
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(creds), out, indent=2)
    tmp.replace(path)
    return path


def load_or_create(run_dir: Path) -> Credentials:
    """The run directory's credentials, generated and saved on first use."""
    existing = load(run_dir)
    if existing is not None:
        return existing
    creds = Credentials.generate()
    save(run_dir, creds)
    return creds
