"""One local Redis: loopback only, append-only with fsync per write, a generated password."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from broker.devkit import credentials
from broker.devkit.install import require_binary
from broker.devkit.layout import (
    REDIS_USER,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Layout,
    Progress,
    ServerConfig,
    ServersError,
    creds_dir,
)
from broker.devkit.processes import (
    alive,
    check_reachable,
    live_pid,
    log_tail,
    make_dirs,
    port_open,
    refuse_busy_ports,
    service_account,
    terminate,
    wait_for,
    write_file,
)


def redis_command(port: int, password: str, *words: str, timeout: float = 1.0) -> bytes | None:
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


def redis_ping(port: int, password: str = "") -> bool:
    """Whether a Redis server answers PING (not LOADING) on the port."""
    answer = redis_command(port, password, "PING")
    return answer is not None and answer.startswith(b"+PONG")


def redis_password(cfg: ServerConfig) -> str:
    """The Redis password from the run directory ('' for a run dir from before them)."""
    creds = credentials.load(creds_dir(cfg))
    return creds.redis_password if creds is not None else ""


def _redis_conf(cfg: ServerConfig, layout: Layout, password: str) -> str:
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


def redis_pid(cfg: ServerConfig) -> int | None:
    """Pid of this instance's Redis, if running."""
    return live_pid(Layout.of(cfg).redis_pid, "redis-server")


def start_redis(cfg: ServerConfig, progress: Progress, timeout: float = START_TIMEOUT) -> None:
    """Start this instance's Redis unless it runs already; return once it answers PING."""
    layout = Layout.of(cfg)
    deadline = time.monotonic() + timeout
    password = credentials.load_or_create(creds_dir(cfg)).redis_password
    pid = redis_pid(cfg)
    if pid is not None:
        progress(f"redis: already running (pid {pid}, port {cfg.redis_port})")
        _require_redis_password(cfg, password, progress)
    else:
        launch_redis(cfg, layout, password)
        progress(f"redis: starting on 127.0.0.1:{cfg.redis_port}")
    if not wait_for(lambda: redis_ping(cfg.redis_port, password), deadline):
        raise ServersError(
            f"redis did not answer PING on 127.0.0.1:{cfg.redis_port} within {timeout:.0f}s; "
            f"see {layout.redis_log}\n{log_tail(layout.redis_startup_log, layout.redis_log)}"
        )
    progress(f"redis: ready on 127.0.0.1:{cfg.redis_port}")


def _require_redis_password(cfg: ServerConfig, password: str, progress: Progress) -> None:
    """A Redis started before passwords existed gets one now, without a restart."""
    if redis_ping(cfg.redis_port, "") and not redis_ping(cfg.redis_port, password):
        redis_command(cfg.redis_port, "", "CONFIG", "SET", "requirepass", password)
        redis_command(cfg.redis_port, password, "CONFIG", "SET", "masterauth", password)
        redis_command(cfg.redis_port, password, "CONFIG", "REWRITE")
        progress("redis: set the generated password (it had none)")


def launch_redis(cfg: ServerConfig, layout: Layout, password: str, extra: str = "") -> None:
    """Write redis.conf and run redis-server, which daemonizes itself."""
    binary = require_binary("redis-server")
    account = service_account(REDIS_USER)
    refuse_busy_ports({"redis": cfg.redis_port}, layout.redis_log)
    make_dirs(None, layout.root)
    check_reachable(layout.redis, account)
    make_dirs(account, layout.redis, layout.redis_data)
    conf = layout.redis / "redis.conf"
    # With Sentinel, the file is Sentinel's after the first start (it records who is
    # master there): never regenerated then. The password is in it: redis user only.
    if not (cfg.sentinel and conf.exists()):
        text = _redis_conf(cfg, layout, password) + (extra + "\n" if extra else "")
        write_file(conf, text, account, mode=0o600)
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
            f"{log_tail(layout.redis_startup_log, layout.redis_log)}"
        )


def stop_redis(cfg: ServerConfig, progress: Progress, timeout: float = STOP_TIMEOUT) -> None:
    """Shut this instance's Redis down cleanly (SHUTDOWN flushes the AOF); no-op if stopped."""
    layout = Layout.of(cfg)
    pid = redis_pid(cfg)
    if pid is None:
        progress("redis: not running")
        return
    progress(f"redis: stopping (pid {pid})")
    # SHUTDOWN closes the connection without a reply when it succeeds; a reply is a refusal.
    refusal = redis_command(cfg.redis_port, redis_password(cfg), "SHUTDOWN", timeout=timeout)
    if refusal or not wait_for(lambda: not alive(pid, "redis-server"), time.monotonic() + 10):
        progress(f"redis: SHUTDOWN did not stop it ({refusal!r}); sending SIGTERM")
        terminate(pid, "redis-server", timeout)
    if not wait_for(lambda: not port_open(cfg.redis_port), time.monotonic() + timeout):
        raise ServersError(
            f"redis port {cfg.redis_port} still open after stopping pid {pid}; "
            f"see {layout.redis_log}\n{log_tail(layout.redis_log)}"
        )
    progress("redis: stopped")


def kill_redis(cfg: ServerConfig) -> None:
    """SIGKILL this instance's Redis (fault injection); returns once its port is closed."""
    pid = redis_pid(cfg)
    if pid is None:
        return
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    wait_for(lambda: not alive(pid, "redis-server") and not port_open(cfg.redis_port), deadline)
