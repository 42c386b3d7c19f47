"""The Debian packages the local servers run from: found, or installed with apt-get."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from broker.devkit.layout import DOCKER_HINT, Progress, ServersError
from broker.devkit.processes import tail_text

# Debian's /usr/sbin/rabbitmq* wrappers re-run themselves through `su rabbitmq`, which resets HOME
# (so the Erlang cookie) and refuses other users; the real scripts live here.
RABBITMQ_REAL_BIN = Path("/usr/lib/rabbitmq/bin")
PACKAGE_OF = {
    "rabbitmq-server": "rabbitmq-server",
    "rabbitmqctl": "rabbitmq-server",
    "redis-server": "redis-server",
    "redis-sentinel": "redis-sentinel",
}


def _find_binary(name: str) -> str | None:
    """Path of a server binary, preferring the real RabbitMQ scripts over Debian's su wrappers."""
    real = RABBITMQ_REAL_BIN / name
    if name.startswith("rabbitmq") and os.access(real, os.X_OK):
        return str(real)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def require_binary(name: str) -> str:
    """Path of a server binary, or a ServersError saying which package to install."""
    found = _find_binary(name)
    if found is None:
        package = PACKAGE_OF[name]
        raise ServersError(
            f"{name} not found: install it with `apt-get install -y {package}` "
            f"(or run `scripts/servers start` as root, which installs it), {DOCKER_HINT}"
        )
    return found


def _missing_packages() -> list[str]:
    """Debian packages whose binaries are not installed."""
    return sorted({pkg for name, pkg in PACKAGE_OF.items() if _find_binary(name) is None})


def _apt_get(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run apt-get non-interactively and capture its output for error messages."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, check=False)


def ensure_installed(progress: Progress) -> None:
    """Install rabbitmq-server / redis-server with apt-get if missing (root only)."""
    missing = _missing_packages()
    if not missing:
        return
    packages = " ".join(missing)
    if os.geteuid() != 0:
        raise ServersError(
            f"missing packages: {packages}. Install them with "
            f"`sudo apt-get install -y {packages}`, {DOCKER_HINT}"
        )
    if shutil.which("apt-get") is None:
        raise ServersError(f"missing packages: {packages} and no apt-get here; {DOCKER_HINT}")
    progress(f"installing {packages} with apt-get")
    result = _apt_get(["install", "-y", "--no-install-recommends", *missing])
    if result.returncode != 0:
        # A fresh image usually has empty package lists; only then is an update worth its time.
        progress("apt-get install failed; running apt-get update and retrying")
        _apt_get(["update"])
        result = _apt_get(["install", "-y", "--no-install-recommends", *missing])
    if result.returncode != 0 or _missing_packages():
        raise ServersError(
            f"`apt-get install -y {packages}` failed (exit {result.returncode}); "
            f"fix apt and retry, {DOCKER_HINT}\n{tail_text(result.stdout + result.stderr)}"
        )
    progress(f"installed {packages}")
