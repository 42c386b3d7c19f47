"""Start and stop local RabbitMQ and Redis servers from the Debian packages, without Docker."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from broker import credentials

Progress = Callable[[str], None]

START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
POLL_INTERVAL = 0.2
LOG_TAIL_LINES = 25
# Debian's /usr/sbin/rabbitmq* wrappers re-run themselves through `su rabbitmq`, which resets HOME
# (so the Erlang cookie) and refuses other users; the real scripts live here.
RABBITMQ_REAL_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_USER = "rabbitmq"
REDIS_USER = "redis"
PACKAGE_OF = {
    "rabbitmq-server": "rabbitmq-server",
    "rabbitmqctl": "rabbitmq-server",
    "redis-server": "redis-server",
    "redis-sentinel": "redis-sentinel",
}
DOCKER_HINT = "or use `docker compose up` on a machine with Docker"
# Kept so a server we launched can be reaped after it stops (and so an early crash is noticed).
_LAUNCHED: dict[Path, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ServerConfig:
    """Where (run_dir) and on which ports one local RabbitMQ + Redis pair runs."""

    run_dir: Path
    amqp_port: int = 5672
    dist_port: int = 25672
    management_port: int = 15672
    redis_port: int = 6379
    node_name: str = "trustbroker@localhost"
    # RabbitMQ nodes clustered together; node i (from 0) listens on amqp_port + i,
    # management_port + i and dist_port + i.
    nodes: int = 1
    # A Redis replica on redis_port + 1 and three Sentinels on sentinel_port .. + 2.
    sentinel: bool = False
    sentinel_port: int = 0  # 0: redis_port + 20000
    # Where credentials.json lives when not in run_dir (the extra nodes of a cluster
    # share the first node's).
    secrets_dir: Path | None = None

    @property
    def amqp_ports(self) -> tuple[int, ...]:
        """The AMQP port of every node."""
        return tuple(self.amqp_port + i for i in range(self.nodes))

    @property
    def management_ports(self) -> tuple[int, ...]:
        """The management API port of every node."""
        return tuple(self.management_port + i for i in range(self.nodes))

    @property
    def sentinel_ports(self) -> tuple[int, ...]:
        """The three Sentinels' ports (empty without Sentinel)."""
        if not self.sentinel:
            return ()
        first = self.sentinel_port or self.redis_port + 20000
        return (first, first + 1, first + 2)


# The name Sentinel monitors the master under (redis+sentinel://.../<this>/0).
SENTINEL_SERVICE = "trustbroker"


class ServersError(Exception):
    """A local server could not be installed, started or stopped."""


def _creds_dir(cfg: ServerConfig) -> Path:
    return (cfg.secrets_dir or cfg.run_dir).resolve()


@dataclass(frozen=True)
class _Layout:
    """Absolute paths of every file one server pair keeps under its run_dir."""

    root: Path
    node_name: str

    @classmethod
    def of(cls, cfg: ServerConfig) -> _Layout:
        """Resolve the layout; absolute because the servers run with another working directory."""
        return cls(cfg.run_dir.resolve(), cfg.node_name)

    @property
    def rabbit(self) -> Path:
        """Directory owned by the rabbitmq user."""
        return self.root / "rabbitmq"

    @property
    def rabbit_home(self) -> Path:
        """HOME of the server and its CLI, so both read this instance's Erlang cookie."""
        return self.rabbit / "home"

    @property
    def mnesia(self) -> Path:
        """RABBITMQ_MNESIA_BASE: message store, queues, streams."""
        return self.rabbit / "mnesia"

    @property
    def rabbit_logs(self) -> Path:
        """RABBITMQ_LOG_BASE."""
        return self.rabbit / "log"

    @property
    def rabbit_log(self) -> Path:
        """The node's own log file inside RABBITMQ_LOG_BASE."""
        return self.rabbit_logs / f"{self.node_name}.log"

    @property
    def rabbit_startup_log(self) -> Path:
        """stdout/stderr of rabbitmq-server (errors before the node log exists land here)."""
        return self.rabbit_logs / "startup.log"

    @property
    def rabbit_pid(self) -> Path:
        """RABBITMQ_PID_FILE, written by the node while booting."""
        return self.rabbit / "rabbitmq.pid"

    @property
    def redis(self) -> Path:
        """Directory owned by the redis user."""
        return self.root / "redis"

    @property
    def redis_data(self) -> Path:
        """Redis `dir`: the append-only file lives here."""
        return self.redis / "data"

    @property
    def redis_pid(self) -> Path:
        """Redis pidfile."""
        return self.redis / "redis.pid"

    @property
    def redis_log(self) -> Path:
        """Redis logfile."""
        return self.redis / "redis.log"

    @property
    def redis_startup_log(self) -> Path:
        """stdout/stderr of redis-server before it daemonizes (config errors)."""
        return self.redis / "startup.log"


# ---------------------------------------------------------------- installation


def _find_binary(name: str) -> str | None:
    """Path of a server binary, preferring the real RabbitMQ scripts over Debian's su wrappers."""
    real = RABBITMQ_REAL_BIN / name
    if name.startswith("rabbitmq") and os.access(real, os.X_OK):
        return str(real)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _require_binary(name: str) -> str:
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
            f"fix apt and retry, {DOCKER_HINT}\n{_tail_text(result.stdout + result.stderr)}"
        )
    progress(f"installed {packages}")


# ---------------------------------------------------------------- processes and ports


def _tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """Last lines of a text."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_tail(*paths: Path) -> str:
    """Labelled tails of the given log files that exist."""
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            parts.append(f"--- last lines of {path} ---\n{_tail_text(text)}")
    return "\n".join(parts) if parts else "(no log output yet)"


def _read_pid(path: Path) -> int | None:
    """Pid recorded in a pid file, if any."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int, marker: str) -> bool:
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


def _live_pid(pid_file: Path, marker: str) -> int | None:
    """Pid from pid_file if that process is still running (a stale file means not running)."""
    pid = _read_pid(pid_file)
    return pid if pid is not None and _alive(pid, marker) else None


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


def _port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    return _exchange(port, b"") is not None


def _redis_command(port: int, password: str, *words: str, timeout: float = 1.0) -> bytes | None:
    """Send one command (after AUTH when a password is set); the start of its reply, b''
    when the server closed without one (SHUTDOWN), None when nothing listens."""
    commands = ([f"AUTH {password}"] if password else []) + [" ".join(words)]
    payload = "".join(f"{command}\r\n" for command in commands).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(payload)
            received = b""
            while received.count(b"\r\n") < len(commands):
                chunk = sock.recv(256)
                if not chunk:
                    break
                received += chunk
    except OSError:
        return None
    lines = received.split(b"\r\n")
    if password and lines[0].startswith(b"-"):
        return lines[0]  # AUTH refused: that is the answer
    return lines[len(commands) - 1] if len(lines) >= len(commands) else b""


def _redis_ping(port: int, password: str = "") -> bool:
    """Whether a Redis server answers PING (not LOADING) on the port."""
    answer = _redis_command(port, password, "PING")
    return answer is not None and answer.startswith(b"+PONG")


def _management_answers(port: int) -> bool:
    """Whether the management HTTP API answers on 127.0.0.1 (401 without credentials counts)."""
    # No proxy: an http_proxy in the environment must not intercept a loopback request.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/api/overview", timeout=2.0) as response:
            return int(response.status) == 200
    except urllib.error.HTTPError as err:
        return err.code == 401
    except (OSError, ValueError):
        return False


def _wait_for(check: Callable[[], bool], deadline: float) -> bool:
    """Poll check until it is true or the monotonic deadline passes."""
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def _refuse_busy_ports(ports: Mapping[str, int], log: Path) -> None:
    """Raise if another process already listens on one of the ports we are about to use."""
    busy = [f"{name} port {port}" for name, port in ports.items() if _port_open(port)]
    if busy:
        raise ServersError(
            f"cannot start: {', '.join(busy)} already in use by another process (not the server "
            f"recorded under {log.parent}); stop it or choose other ports "
            "(--amqp-port/--redis-port/--management-port/--dist-port)"
        )


def _reap(pid_file: Path) -> None:
    """Collect the exit status of a server this process launched, so it does not linger."""
    proc = _LAUNCHED.pop(pid_file, None)
    if proc is not None:
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _terminate(pid: int, marker: str, timeout: float) -> None:
    """SIGTERM, then SIGKILL after timeout; returns once the process is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_for(lambda: not _alive(pid, marker), time.monotonic() + timeout):
            return


# ---------------------------------------------------------------- privileges


def _account(user: str) -> pwd.struct_passwd | None:
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


def _check_reachable(path: Path, account: pwd.struct_passwd | None) -> None:
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


def _make_dirs(account: pwd.struct_passwd | None, *dirs: Path) -> None:
    """Create directories owned by the service account (the servers drop root privileges)."""
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
        _chown(directory, account)


def _chown(path: Path, account: pwd.struct_passwd | None) -> None:
    """Give path to the service account, if we are root."""
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _write(path: Path, text: str, account: pwd.struct_passwd | None, mode: int = 0o644) -> None:
    """Write a config file readable by the service account."""
    path.write_text(text)
    path.chmod(mode)
    _chown(path, account)


def _popen(
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


def _run(
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


# ---------------------------------------------------------------- Redis


def _redis_password(cfg: ServerConfig) -> str:
    """The Redis password from the run directory ('' for a run dir from before them)."""
    creds = credentials.load(_creds_dir(cfg))
    return creds.redis_password if creds is not None else ""


def _redis_conf(cfg: ServerConfig, layout: _Layout, password: str) -> str:
    """redis.conf for one instance: loopback only, daemonized, append-only, a password."""
    return "\n".join(
        [
            "bind 127.0.0.1",
            # No default credentials: every client (routers, CLI, replicas) authenticates.
            f"requirepass {password}",
            f"masterauth {password}",
            f"port {cfg.redis_port}",
            "protected-mode yes",
            "daemonize yes",
            f'pidfile "{layout.redis_pid}"',
            f'logfile "{layout.redis_log}"',
            f'dir "{layout.redis_data}"',
            "appendonly yes",
            # Fault tests SIGKILL Redis; fsync per write means no acknowledged write is lost.
            "appendfsync always",
            # The AOF is the durable copy; RDB snapshots would only duplicate it.
            'save ""',
            "",
        ]
    )


def _redis_pid(cfg: ServerConfig) -> int | None:
    """Pid of this instance's Redis, if running."""
    return _live_pid(_Layout.of(cfg).redis_pid, "redis-server")


def start_redis(cfg: ServerConfig, progress: Progress, timeout: float = START_TIMEOUT) -> None:
    """Start this instance's Redis unless it runs already; return once it answers PING."""
    layout = _Layout.of(cfg)
    deadline = time.monotonic() + timeout
    password = credentials.load_or_create(_creds_dir(cfg)).redis_password
    pid = _redis_pid(cfg)
    if pid is not None:
        progress(f"redis: already running (pid {pid}, port {cfg.redis_port})")
        _require_redis_password(cfg, password, progress)
    else:
        _launch_redis(cfg, layout, password)
        progress(f"redis: starting on 127.0.0.1:{cfg.redis_port}")
    if not _wait_for(lambda: _redis_ping(cfg.redis_port, password), deadline):
        raise ServersError(
            f"redis did not answer PING on 127.0.0.1:{cfg.redis_port} within {timeout:.0f}s; "
            f"see {layout.redis_log}\n{_log_tail(layout.redis_startup_log, layout.redis_log)}"
        )
    progress(f"redis: ready on 127.0.0.1:{cfg.redis_port}")


def _require_redis_password(cfg: ServerConfig, password: str, progress: Progress) -> None:
    """A Redis started before passwords existed gets one now, without a restart."""
    if _redis_ping(cfg.redis_port, "") and not _redis_ping(cfg.redis_port, password):
        _redis_command(cfg.redis_port, "", "CONFIG", "SET", "requirepass", password)
        _redis_command(cfg.redis_port, password, "CONFIG", "SET", "masterauth", password)
        _redis_command(cfg.redis_port, password, "CONFIG", "REWRITE")
        progress("redis: set the generated password (it had none)")


def _launch_redis(cfg: ServerConfig, layout: _Layout, password: str, extra: str = "") -> None:
    """Write redis.conf and run redis-server, which daemonizes itself."""
    binary = _require_binary("redis-server")
    account = _account(REDIS_USER)
    _refuse_busy_ports({"redis": cfg.redis_port}, layout.redis_log)
    _make_dirs(None, layout.root)
    _check_reachable(layout.redis, account)
    _make_dirs(account, layout.redis, layout.redis_data)
    conf = layout.redis / "redis.conf"
    # With Sentinel, the file is Sentinel's after the first start (it records who is
    # master there): never regenerated then. The password is in it: redis user only.
    if not (cfg.sentinel and conf.exists()):
        text = _redis_conf(cfg, layout, password) + (extra + "\n" if extra else "")
        _write(conf, text, account, mode=0o600)
    with layout.redis_startup_log.open("w") as out:
        result = subprocess.run(
            [binary, str(conf)],
            cwd=layout.redis,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
            start_new_session=True,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )
    if result.returncode != 0:
        raise ServersError(
            f"redis-server exited with {result.returncode} before daemonizing; check {conf}\n"
            f"{_log_tail(layout.redis_startup_log, layout.redis_log)}"
        )


def stop_redis(cfg: ServerConfig, progress: Progress, timeout: float = STOP_TIMEOUT) -> None:
    """Shut this instance's Redis down cleanly (SHUTDOWN flushes the AOF); no-op if stopped."""
    layout = _Layout.of(cfg)
    pid = _redis_pid(cfg)
    if pid is None:
        progress("redis: not running")
        return
    progress(f"redis: stopping (pid {pid})")
    # SHUTDOWN closes the connection without a reply when it succeeds; a reply is a refusal.
    refusal = _redis_command(cfg.redis_port, _redis_password(cfg), "SHUTDOWN", timeout=timeout)
    if refusal or not _wait_for(lambda: not _alive(pid, "redis-server"), time.monotonic() + 10):
        progress(f"redis: SHUTDOWN did not stop it ({refusal!r}); sending SIGTERM")
        _terminate(pid, "redis-server", timeout)
    if not _wait_for(lambda: not _port_open(cfg.redis_port), time.monotonic() + timeout):
        raise ServersError(
            f"redis port {cfg.redis_port} still open after stopping pid {pid}; "
            f"see {layout.redis_log}\n{_log_tail(layout.redis_log)}"
        )
    progress("redis: stopped")


def kill_redis(cfg: ServerConfig) -> None:
    """SIGKILL this instance's Redis (fault injection); returns once its port is closed."""
    pid = _redis_pid(cfg)
    if pid is None:
        return
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    _wait_for(lambda: not _alive(pid, "redis-server") and not _port_open(cfg.redis_port), deadline)


# ---------------------------------------------------------------- RabbitMQ


# A router that holds a delivery this long without acking it loses its channel and the
# delivery goes to another router: well under the clock-skew window (5 min), so a stuck
# router never turns a delay into clock_skew blocks. Agents ack as they go (the SDK acks
# when the loop body moves on), so this also bounds how long one may sit on a message.
CONSUMER_TIMEOUT_MS = 60_000


def _rabbit_conf(cfg: ServerConfig, creds: credentials.Credentials) -> str:
    """rabbitmq.conf: every listener on loopback; the generated admin instead of guest."""
    return "\n".join(
        [
            f"listeners.tcp.1 = 127.0.0.1:{cfg.amqp_port}",
            f"management.tcp.port = {cfg.management_port}",
            "management.tcp.ip = 127.0.0.1",
            # The node log file is enough; stdout (startup.log) then only shows boot failures.
            "log.console = false",
            # No guest: a fresh node creates this user instead (an older node loses guest
            # in _ensure_accounts).
            f"default_user = {creds.admin_user}",
            f"default_pass = {creds.admin_password}",
            "default_user_tags.administrator = true",
            f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",
            # In a cluster, a node cut off from the majority pauses itself and resumes
            # once it sees the others again: no split brain to repair by hand.
            *(["cluster_partition_handling = pause_minority"] if cfg.nodes > 1 else []),
            "",
        ]
    )


def _ensure_accounts(cfg: ServerConfig, progress: Progress) -> None:
    """The service accounts exist with the run directory's passwords; guest does not.

    One `list_users` when all is in order (each rabbitmqctl call costs about a second)."""
    creds = credentials.load_or_create(_creds_dir(cfg))
    listed = _rabbitmqctl(cfg, ["list_users", "--quiet", "--no-table-headers"], 30)
    users = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    wanted = {creds.admin_user: creds.admin_password, creds.router_user: creds.router_password,
              creds.negotiator_user: creds.negotiator_password}  # fmt: skip
    for user, password in wanted.items():
        if user not in users:
            _ctl_or_fail(cfg, ["add_user", user, password])
            progress(f"rabbitmq: created user {user}")
    if creds.admin_user not in users:
        _ctl_or_fail(cfg, ["set_user_tags", creds.admin_user, "administrator"])
        _ctl_or_fail(cfg, ["set_permissions", "-p", "/", creds.admin_user, ".*", ".*", ".*"])
    if creds.router_user not in users or creds.negotiator_user not in users:
        _grant_services(cfg, creds, "/")
    if "guest" in users:
        _ctl_or_fail(cfg, ["delete_user", "guest"])
        progress("rabbitmq: deleted the default guest user")


def _grant_services(cfg: ServerConfig, creds: credentials.Credentials, vhost: str) -> None:
    """The router's and negotiator's permissions on `vhost`, from broker.provision."""
    from broker.config import Topology
    from broker.provision import negotiator_permissions, router_permissions

    topology = Topology()
    for user, perms in ((creds.router_user, router_permissions(topology)),
                        (creds.negotiator_user, negotiator_permissions(topology))):  # fmt: skip
        args = [perms["configure"], perms["write"], perms["read"]]
        _ctl_or_fail(cfg, ["set_permissions", "-p", vhost, user, *args])


def _ctl_or_fail(cfg: ServerConfig, args: Sequence[str]) -> None:
    result = _rabbitmqctl(cfg, args, 30)
    if result.returncode != 0:
        layout = _Layout.of(cfg)
        raise _rabbit_failure(
            cfg,
            layout,
            f"`rabbitmqctl {args[0]}` failed: {(result.stderr or result.stdout).strip()}",
        )


def _rabbit_env(cfg: ServerConfig, layout: _Layout) -> dict[str, str]:
    """Environment for rabbitmq-server and rabbitmqctl of this instance."""
    # Stray RABBITMQ_*/ERL_* settings from the caller's shell would break the isolation.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        {
            # Same HOME for server and CLI = same Erlang cookie, private to this instance.
            "HOME": str(layout.rabbit_home),
            "LANG": "C.UTF-8",  # the Elixir CLI warns about latin1 otherwise
            "RABBITMQ_NODENAME": cfg.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(cfg.amqp_port),
            "RABBITMQ_DIST_PORT": str(cfg.dist_port),
            "RABBITMQ_MNESIA_BASE": str(layout.mnesia),
            "RABBITMQ_LOG_BASE": str(layout.rabbit_logs),
            "RABBITMQ_PID_FILE": str(layout.rabbit_pid),
            "RABBITMQ_CONFIG_FILE": str(layout.rabbit / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(layout.rabbit / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(layout.rabbit / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(layout.rabbit / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(layout.mnesia / f"{cfg.node_name}-feature_flags"),
            # Erlang distribution listens on all interfaces unless told otherwise.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            # Only used if this node has to start epmd itself.
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_CRASH_DUMP": str(layout.rabbit_logs / "erl_crash.dump"),
        }
    )
    return env


def _rabbit_pid(cfg: ServerConfig) -> int | None:
    """Pid of this instance's RabbitMQ node (the Erlang VM), if running."""
    return _live_pid(_Layout.of(cfg).rabbit_pid, "beam")


def _rabbitmqctl(
    cfg: ServerConfig, args: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run rabbitmqctl against this instance's node with its cookie."""
    layout = _Layout.of(cfg)
    cmd = [_require_binary("rabbitmqctl"), "-n", cfg.node_name, *args]
    return _run(cmd, _account(RABBITMQ_USER), _rabbit_env(cfg, layout), timeout)


def _prepare_rabbitmq(
    cfg: ServerConfig, layout: _Layout, account: pwd.struct_passwd | None
) -> None:
    """Create the directories, cookie and config files of this RabbitMQ instance."""
    _make_dirs(None, layout.root)
    _check_reachable(layout.rabbit, account)
    _make_dirs(account, layout.rabbit, layout.rabbit_home, layout.mnesia, layout.rabbit_logs)
    cookie = layout.rabbit_home / ".erlang.cookie"
    if not cookie.exists():
        # Erlang refuses a cookie file that others can read.
        _write(cookie, secrets.token_hex(20), account, mode=0o400)
    creds = credentials.load_or_create(_creds_dir(cfg))
    # Holds the admin's password: readable by the rabbitmq user only.
    _write(layout.rabbit / "rabbitmq.conf", _rabbit_conf(cfg, creds), account, mode=0o600)
    _write(layout.rabbit / "enabled_plugins", "[rabbitmq_management].\n", account)
    _write(layout.rabbit / "rabbitmq-env.conf", "", account)
    layout.rabbit_pid.unlink(missing_ok=True)


def _launch_rabbitmq(cfg: ServerConfig, layout: _Layout) -> None:
    """Start rabbitmq-server in the foreground of a detached session, as the rabbitmq user."""
    binary = _require_binary("rabbitmq-server")
    _require_binary("rabbitmqctl")
    account = _account(RABBITMQ_USER)
    ports = {"amqp": cfg.amqp_port, "dist": cfg.dist_port, "management": cfg.management_port}
    _refuse_busy_ports(ports, layout.rabbit_log)
    _prepare_rabbitmq(cfg, layout, account)
    _LAUNCHED[layout.rabbit_pid] = _popen(
        [binary], account, _rabbit_env(cfg, layout), layout.rabbit_startup_log
    )


def _rabbit_failure(cfg: ServerConfig, layout: _Layout, what: str) -> ServersError:
    """A ServersError for RabbitMQ that quotes its logs."""
    return ServersError(
        f"rabbitmq node {cfg.node_name}: {what}; see {layout.rabbit_log}\n"
        f"{_log_tail(layout.rabbit_startup_log, layout.rabbit_log)}"
    )


def _launched_alive(layout: _Layout) -> bool:
    """False once a rabbitmq-server we launched has exited (a crashed boot)."""
    proc = _LAUNCHED.get(layout.rabbit_pid)
    return proc is None or proc.poll() is None


def _await_rabbitmq(
    cfg: ServerConfig, layout: _Layout, deadline: float, progress: Progress
) -> None:
    """Wait until AMQP, `rabbitmqctl await_startup` and the management API all answer."""
    crashed: list[bool] = []

    def amqp_up() -> bool:
        if not _launched_alive(layout):
            crashed.append(True)
            return True
        # A bare connect is not logged, unlike an AMQP header probe (one warning per poll);
        # await_startup below is the real readiness check.
        return _port_open(cfg.amqp_port)

    if not _wait_for(amqp_up, deadline):
        raise _rabbit_failure(cfg, layout, f"AMQP port {cfg.amqp_port} did not answer in time")
    if crashed:
        raise _rabbit_failure(cfg, layout, "rabbitmq-server exited during startup")
    progress(f"rabbitmq: AMQP port open on 127.0.0.1:{cfg.amqp_port}; awaiting full startup")
    remaining = deadline - time.monotonic()
    result = _rabbitmqctl(
        cfg, ["await_startup", "--timeout", str(max(int(remaining), 1))], remaining
    )
    if result.returncode != 0:
        raise _rabbit_failure(
            cfg,
            layout,
            f"`rabbitmqctl await_startup` failed: {(result.stderr or result.stdout).strip()}",
        )
    if not _wait_for(lambda: _management_answers(cfg.management_port), deadline):
        raise _rabbit_failure(
            cfg, layout, f"management API did not answer on 127.0.0.1:{cfg.management_port}"
        )


def start_rabbitmq(cfg: ServerConfig, progress: Progress, timeout: float = START_TIMEOUT) -> None:
    """Start this instance's RabbitMQ unless it runs already; return once it fully answers."""
    layout = _Layout.of(cfg)
    started = time.monotonic()
    pid = _rabbit_pid(cfg)
    if pid is not None:
        progress(f"rabbitmq: already running (node {cfg.node_name}, pid {pid})")
    else:
        _launch_rabbitmq(cfg, layout)
        progress(
            f"rabbitmq: starting node {cfg.node_name} (AMQP 127.0.0.1:{cfg.amqp_port}, "
            f"management 127.0.0.1:{cfg.management_port}); log {layout.rabbit_log}"
        )
    _await_rabbitmq(cfg, layout, started + timeout, progress)
    _ensure_accounts(cfg, progress)
    progress(f"rabbitmq: ready after {time.monotonic() - started:.1f}s")


def stop_rabbitmq(cfg: ServerConfig, progress: Progress, timeout: float = STOP_TIMEOUT) -> None:
    """Stop this instance's RabbitMQ node cleanly (rabbitmqctl stop); no-op if stopped."""
    layout = _Layout.of(cfg)
    pid = _rabbit_pid(cfg)
    if pid is None:
        _reap(layout.rabbit_pid)
        progress("rabbitmq: not running")
        return
    progress(f"rabbitmq: stopping node {cfg.node_name} (pid {pid})")
    # With the pid file argument, `stop` returns only after the VM has exited.
    result = _rabbitmqctl(cfg, ["stop", str(layout.rabbit_pid)], timeout)
    if result.returncode != 0:
        progress(f"rabbitmq: rabbitmqctl stop failed ({result.stderr.strip()}); sending SIGTERM")
        _terminate(pid, "beam", timeout)
    _reap(layout.rabbit_pid)
    ports = (cfg.amqp_port, cfg.management_port, cfg.dist_port)
    if not _wait_for(lambda: not any(map(_port_open, ports)), time.monotonic() + timeout):
        raise _rabbit_failure(cfg, layout, f"ports {ports} still open after stopping pid {pid}")
    progress("rabbitmq: stopped")


# ---------------------------------------------------------------- both


def start(cfg: ServerConfig, progress: Progress, timeout: float = START_TIMEOUT) -> None:
    """Start whichever of Redis and RabbitMQ is not running; return once both answer
    (every cluster node, replica and Sentinel too, when cfg asks for them)."""
    started = time.monotonic()
    start_redis(cfg, progress, timeout)
    if cfg.sentinel:
        from broker.devkit import cluster

        cluster.start_sentinel_group(cfg, progress, timeout)
    if cfg.nodes > 1:
        from broker.devkit import cluster

        cluster.start_cluster(cfg, progress, max(timeout - (time.monotonic() - started), 1.0))
    else:
        start_rabbitmq(cfg, progress, max(timeout - (time.monotonic() - started), 1.0))
    remember(cfg)
    progress(f"servers: ready after {time.monotonic() - started:.1f}s")


# The settings `start` used, kept in its run directory so that `stop` and `status` aim at
# the same servers without the start flags being repeated.
REMEMBERED = "servers.json"
SETTINGS = {
    "amqp_port": "TRUST_AMQP_PORT", "dist_port": "TRUST_DIST_PORT",
    "management_port": "TRUST_MANAGEMENT_PORT", "redis_port": "TRUST_REDIS_PORT",
    "node_name": "TRUST_NODE_NAME", "nodes": "TRUST_RABBITMQ_NODES",
    "sentinel": "TRUST_REDIS_SENTINEL",
}  # fmt: skip


def remember(cfg: ServerConfig) -> None:
    """Record the ports, node name and shape (cluster, Sentinel) the servers under
    cfg.run_dir run with."""
    settings = {name: getattr(cfg, name) for name in SETTINGS}
    (cfg.run_dir / REMEMBERED).write_text(json.dumps(settings, indent=2) + "\n")


def remembered(
    cfg: ServerConfig, env: Mapping[str, str], explicit: Sequence[str] = ()
) -> ServerConfig:
    """`cfg`, with every setting that neither a flag (`explicit`) nor a TRUST_* variable
    gave taken from what `start` recorded in cfg.run_dir (if it did)."""
    try:
        recorded = json.loads((cfg.run_dir / REMEMBERED).read_text())
    except (OSError, ValueError):
        return cfg
    changes = {
        name: type(getattr(cfg, name))(recorded[name])
        for name, variable in SETTINGS.items()
        if name in recorded and name not in explicit and not env.get(variable)
    }
    return replace(cfg, **changes)


def stop(cfg: ServerConfig, progress: Progress, timeout: float = STOP_TIMEOUT) -> None:
    """Stop both servers cleanly; each is attempted even if the other fails."""
    from broker.devkit import cluster

    errors: list[str] = []
    stops: list[Callable[[ServerConfig, Progress, float], None]] = [stop_rabbitmq, stop_redis]
    if cfg.nodes > 1 or cfg.sentinel:
        stops = [cluster.stop_cluster, cluster.stop_sentinel_group, stop_redis]
    for stop_one in stops:
        try:
            stop_one(cfg, progress, timeout)
        except ServersError as err:
            errors.append(str(err))
    if errors:
        raise ServersError("\n".join(errors))


def rotate(cfg: ServerConfig, progress: Progress) -> None:
    """New passwords for the admin, router, negotiator and Redis, applied to the running
    servers, then written to credentials.json. Open connections stay up; new ones need
    the new passwords (restart routers and re-read the file)."""
    old = credentials.load(_creds_dir(cfg))
    if old is None:
        raise ServersError(f"no {credentials.path_in(_creds_dir(cfg))}: start the servers first")
    new = old.rotated()
    for user, password in ((new.admin_user, new.admin_password),
                           (new.router_user, new.router_password),
                           (new.negotiator_user, new.negotiator_password)):  # fmt: skip
        _ctl_or_fail(cfg, ["change_password", user, password])
    ports = [cfg.redis_port] + ([cfg.redis_port + 1] if cfg.sentinel else [])
    for port in ports:
        for key in ("masterauth", "requirepass"):
            _redis_command(port, old.redis_password, "CONFIG", "SET", key, new.redis_password)
        _redis_command(port, new.redis_password, "CONFIG", "REWRITE")
    credentials.save(_creds_dir(cfg), new)
    progress(f"new passwords in force and written to {credentials.path_in(_creds_dir(cfg))}")
    if cfg.sentinel:
        progress("Sentinels keep the old Redis password until restarted with their files edited")


def status(cfg: ServerConfig) -> dict[str, object]:
    """Whether this instance's servers run and answer, with their ports, pids and logs."""
    layout = _Layout.of(cfg)
    rabbit_pid = _rabbit_pid(cfg)
    redis_pid = _redis_pid(cfg)
    return {
        "rabbitmq": {
            "running": rabbit_pid is not None and _port_open(cfg.amqp_port),
            "pid": rabbit_pid,
            "node_name": cfg.node_name,
            "amqp_port": cfg.amqp_port,
            "management_port": cfg.management_port,
            "dist_port": cfg.dist_port,
            "log": str(layout.rabbit_log),
        },
        "redis": {
            "running": redis_pid is not None and _redis_ping(cfg.redis_port, _redis_password(cfg)),
            "pid": redis_pid,
            "port": cfg.redis_port,
            "log": str(layout.redis_log),
        },
        **_cluster_status(cfg),
    }


def _cluster_status(cfg: ServerConfig) -> dict[str, object]:
    """The extra nodes, replica and Sentinels, when there are any."""
    from broker.devkit import cluster

    extra: dict[str, object] = {}
    if cfg.nodes > 1:
        members = cluster.node_status(cfg)
        extra["cluster"] = {"running": all(m["running"] for m in members), "nodes": members}
    if cfg.sentinel:
        password = _redis_password(cfg)
        follower = cluster.replica(cfg)
        up = [_redis_ping(port, password) for port in (follower.redis_port, *cfg.sentinel_ports)]
        extra["sentinel"] = {
            "running": all(up), "replica_port": follower.redis_port,
            "sentinel_ports": list(cfg.sentinel_ports), "master_port": cluster.master_port(cfg),
        }  # fmt: skip
    return extra


# ---------------------------------------------------------------- command line

COMMANDS_HELP = """\
commands:
  start   install rabbitmq-server/redis-server with apt-get if missing (root only), start
          whichever server is not running and wait (up to 90 s) until Redis answers PING and
          RabbitMQ answers AMQP, `rabbitmqctl await_startup` and its management API
  stop    stop both servers cleanly (rabbitmqctl stop; Redis SHUTDOWN); fine if already stopped
  status  print JSON with running/pid/ports/log per server; exit 0 if both run, else 3
  rotate  new passwords for every generated account (RabbitMQ users, Redis), applied to the
          running servers and written to <run dir>/credentials.json (0600)

Everything (data, logs, pid files, config, Erlang cookie) lives under --run-dir.
Both servers listen on 127.0.0.1 only and, when run as root, drop to the rabbitmq/redis users.
"""


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    """An integer default from the environment."""
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"error: {name}={value!r} is not an integer") from None


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """Argument parser whose option defaults come from TRUST_* variables in env."""
    defaults = ServerConfig(run_dir=Path(".run"))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--run-dir",
        type=Path,
        default=Path(env.get("TRUST_RUN_DIR") or defaults.run_dir),
        help="data, logs, pid files and config go here (env TRUST_RUN_DIR; default %(default)s)",
    )
    options = [
        ("--amqp-port", "TRUST_AMQP_PORT", defaults.amqp_port, "RabbitMQ AMQP port"),
        ("--redis-port", "TRUST_REDIS_PORT", defaults.redis_port, "Redis port"),
        (
            "--management-port",
            "TRUST_MANAGEMENT_PORT",
            defaults.management_port,
            "RabbitMQ management HTTP API port",
        ),
        ("--dist-port", "TRUST_DIST_PORT", defaults.dist_port, "Erlang distribution port"),
    ]
    for flag, var, default, text in options:
        common.add_argument(
            flag,
            type=int,
            default=_int_env(env, var, default),
            help=f"{text} (env {var}; default %(default)s)",
        )
    common.add_argument(
        "--node-name",
        default=env.get("TRUST_NODE_NAME") or defaults.node_name,
        help="RabbitMQ node name (env TRUST_NODE_NAME; default %(default)s)",
    )
    common.add_argument(
        "--nodes",
        type=int,
        default=_int_env(env, "TRUST_RABBITMQ_NODES", 1),
        help="RabbitMQ cluster nodes; node i listens on each base port + i "
        "(env TRUST_RABBITMQ_NODES; default %(default)s)",
    )
    common.add_argument(
        "--sentinel",
        action="store_true",
        default=env.get("TRUST_REDIS_SENTINEL", "") in ("1", "true", "yes"),
        help="also a Redis replica (redis port + 1) and three Sentinels (redis port + "
        "20000 ..) that fail over to it (env TRUST_REDIS_SENTINEL=1)",
    )
    parser = argparse.ArgumentParser(
        prog="scripts/servers",
        description="Run local RabbitMQ and Redis servers from the Debian packages (no Docker).",
        epilog=COMMANDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start,stop,status,rotate}")
    sub.add_parser("start", parents=[common], help="install if needed, start, wait until ready")
    sub.add_parser("stop", parents=[common], help="stop both servers cleanly")
    sub.add_parser("status", parents=[common], help="print JSON status; exit 3 unless both run")
    sub.add_parser("rotate", parents=[common], help="new passwords for every generated account")
    return parser


def _progress(message: str) -> None:
    """Progress messages go to stderr so stdout stays machine-readable."""
    print(f"[servers] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: start, stop or status."""
    env = os.environ
    given = [arg.split("=")[0] for arg in (argv if argv is not None else sys.argv[1:])]
    args = _parser(env).parse_args(argv)
    explicit = [name for name in SETTINGS if f"--{name.replace('_', '-')}" in given]
    cfg = ServerConfig(
        run_dir=args.run_dir,
        amqp_port=args.amqp_port,
        dist_port=args.dist_port,
        management_port=args.management_port,
        redis_port=args.redis_port,
        node_name=args.node_name,
        nodes=args.nodes,
        sentinel=args.sentinel,
    )
    try:
        if args.command == "start":
            ensure_installed(_progress)
            start(cfg, _progress)
        elif args.command == "stop":
            stop(remembered(cfg, env, explicit), _progress)
        elif args.command == "rotate":
            rotate(remembered(cfg, env, explicit), _progress)
        else:
            report = status(remembered(cfg, env, explicit))
            print(json.dumps(report, indent=2))
            running = all(bool(v["running"]) for v in report.values() if isinstance(v, dict))
            return 0 if running else 3
    except ServersError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
