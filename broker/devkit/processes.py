"""Processes, ports and files of the local servers: launch as the service account,
wait, stop, and quote the logs when something fails."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from broker.devkit.layout import DOCKER_HINT, RABBITMQ_USER, STOP_TIMEOUT, ServersError

POLL_INTERVAL = 0.2
LOG_TAIL_LINES = 25


# Kept so a server we launched can be reaped after it stops (and so an early crash is noticed).
LAUNCHED: dict[Path, subprocess.Popen[bytes]] = {}


def tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """Last lines of a text."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def log_tail(*paths: Path) -> str:
    """Labelled tails of the given log files that exist."""
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            parts.append(f"--- last lines of {path} ---\n{tail_text(text)}")
    return "\n".join(parts) if parts else "(no log output yet)"


def _read_pid(path: Path) -> int | None:
    """Pid recorded in a pid file, if any."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int, marker: str) -> bool:
    """Whether pid is a live process whose command line contains marker (zombies are dead)."""
    # Daemonized servers are reparented to PID 1, which here never reaps them; the marker guards
    # against a recycled pid from a stale pid file.
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = proc_stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X") and marker.encode() in cmdline


def live_pid(pid_file: Path, marker: str) -> int | None:
    """Pid from pid_file if that process is still running (a stale file means not running)."""
    pid = _read_pid(pid_file)
    return pid if pid is not None and alive(pid, marker) else None


def _exchange(port: int, payload: bytes, timeout: float = 1.0) -> bytes | None:
    """Send payload to 127.0.0.1:port and return the first bytes of the answer (None if closed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            if payload:
                sock.sendall(payload)
                return sock.recv(64)
            return b""
    except OSError:
        return None


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    return _exchange(port, b"") is not None


def wait_for(check: Callable[[], bool], deadline: float) -> bool:
    """Poll check until it is true or the monotonic deadline passes."""
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def refuse_busy_ports(ports: Mapping[str, int], log: Path) -> None:
    """Raise if another process already listens on one of the ports we are about to use."""
    busy = [f"{name} port {port}" for name, port in ports.items() if port_open(port)]
    if busy:
        raise ServersError(
            f"cannot start: {', '.join(busy)} already in use by another process (not the server "
            f"recorded under {log.parent}); stop it or choose other ports "
            "(--amqp-port/--redis-port/--management-port/--dist-port)"
        )


def reap(pid_file: Path) -> None:
    """Collect the exit status of a server this process launched, so it does not linger."""
    proc = LAUNCHED.pop(pid_file, None)
    if proc is not None:
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def terminate(pid: int, marker: str, timeout: float) -> None:
    """SIGTERM, then SIGKILL after timeout; returns once the process is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_for(lambda: not alive(pid, marker), time.monotonic() + timeout):
            return


def service_account(user: str) -> pwd.struct_passwd | None:
    """The service account to drop to when running as root; None means run as the caller."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(user)
    except KeyError:
        package = "rabbitmq-server" if user == RABBITMQ_USER else "redis-server"
        raise ServersError(
            f"system user {user!r} does not exist; reinstall the package "
            f"(`apt-get install --reinstall -y {package}`), {DOCKER_HINT}"
        ) from None


def check_reachable(path: Path, account: pwd.struct_passwd | None) -> None:
    """Raise if the service account cannot enter every parent directory of path."""
    if account is None:
        return
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise ServersError(
                f"user {account.pw_name!r} cannot enter {parent} (mode "
                f"{stat.filemode(st.st_mode)}), so its server cannot use {path}; choose a run_dir "
                f"under a world-searchable directory or `chmod o+x {parent}`"
            )


def make_dirs(account: pwd.struct_passwd | None, *dirs: Path) -> None:
    """Create directories owned by the service account (the servers drop root privileges)."""
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
        chown(directory, account)


def chown(path: Path, account: pwd.struct_passwd | None) -> None:
    """Give path to the service account, if we are root."""
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def write_file(path: Path, text: str, account: pwd.struct_passwd | None, mode: int = 0o644) -> None:
    """Write a config file readable by the service account."""
    path.write_text(text)
    path.chmod(mode)
    chown(path, account)


def popen_as(
    cmd: Sequence[str], account: pwd.struct_passwd | None, env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start a server in its own session, as the service account, output appended to log."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=log.parent,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # keeps running after the CLI exits; immune to our Ctrl-C
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,  # drop root's supplementary groups too
        )


def run_as(
    cmd: Sequence[str], account: pwd.struct_passwd | None, env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a short command as the service account and capture its output."""
    try:
        return subprocess.run(
            list(cmd),
            env=dict(env),
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(timeout, 1.0),
            check=False,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"") + (err.stderr or b"")
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        return subprocess.CompletedProcess(list(cmd), 124, text, f"timed out after {timeout:.0f}s")
