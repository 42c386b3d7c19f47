"""One local RabbitMQ node: loopback only, its own Erlang cookie, the generated
accounts instead of guest."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from broker.devkit import credentials
from broker.devkit.install import require_binary
from broker.devkit.layout import (
    RABBITMQ_USER,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Layout,
    Progress,
    ServerConfig,
    ServersError,
    creds_dir,
)
from broker.devkit.processes import (
    LAUNCHED,
    check_reachable,
    live_pid,
    log_tail,
    make_dirs,
    popen_as,
    port_open,
    reap,
    refuse_busy_ports,
    run_as,
    service_account,
    terminate,
    wait_for,
    write_file,
)


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
            # in ensure_accounts).
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


def ensure_accounts(cfg: ServerConfig, progress: Progress) -> None:
    """The service accounts exist with the run directory's passwords; guest does not.

    One `list_users` when all is in order (each rabbitmqctl call costs about a second)."""
    creds = credentials.load_or_create(creds_dir(cfg))
    listed = rabbitmqctl(cfg, ["list_users", "--quiet", "--no-table-headers"], 30)
    users = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    wanted = {creds.admin_user: creds.admin_password, creds.router_user: creds.router_password,
              creds.negotiator_user: creds.negotiator_password}  # fmt: skip
    for user, password in wanted.items():
        if user not in users:
            ctl_or_fail(cfg, ["add_user", user, password])
            progress(f"rabbitmq: created user {user}")
    if creds.admin_user not in users:
        ctl_or_fail(cfg, ["set_user_tags", creds.admin_user, "administrator"])
        ctl_or_fail(cfg, ["set_permissions", "-p", "/", creds.admin_user, ".*", ".*", ".*"])
    if creds.router_user not in users or creds.negotiator_user not in users:
        _grant_services(cfg, creds, "/")
    if "guest" in users:
        ctl_or_fail(cfg, ["delete_user", "guest"])
        progress("rabbitmq: deleted the default guest user")


def _grant_services(cfg: ServerConfig, creds: credentials.Credentials, vhost: str) -> None:
    """The router's and negotiator's permissions on `vhost`, from broker.ops.provision."""
    from broker.config import Topology
    from broker.ops.provision import negotiator_permissions, router_permissions

    topology = Topology()
    for user, perms in ((creds.router_user, router_permissions(topology)),
                        (creds.negotiator_user, negotiator_permissions(topology))):  # fmt: skip
        args = [perms["configure"], perms["write"], perms["read"]]
        ctl_or_fail(cfg, ["set_permissions", "-p", vhost, user, *args])


def ctl_or_fail(cfg: ServerConfig, args: Sequence[str]) -> None:
    """Run rabbitmqctl; a ServersError quoting the node's logs if it fails."""
    result = rabbitmqctl(cfg, args, 30)
    if result.returncode != 0:
        layout = Layout.of(cfg)
        raise _rabbit_failure(
            cfg,
            layout,
            f"`rabbitmqctl {args[0]}` failed: {(result.stderr or result.stdout).strip()}",
        )


def _rabbit_env(cfg: ServerConfig, layout: Layout) -> dict[str, str]:
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


def rabbit_pid(cfg: ServerConfig) -> int | None:
    """Pid of this instance's RabbitMQ node (the Erlang VM), if running."""
    return live_pid(Layout.of(cfg).rabbit_pid, "beam")


def rabbitmqctl(
    cfg: ServerConfig, args: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run rabbitmqctl against this instance's node with its cookie."""
    layout = Layout.of(cfg)
    cmd = [require_binary("rabbitmqctl"), "-n", cfg.node_name, *args]
    return run_as(cmd, service_account(RABBITMQ_USER), _rabbit_env(cfg, layout), timeout)


def _prepare_rabbitmq(
    cfg: ServerConfig, layout: Layout, account: pwd.struct_passwd | None
) -> None:
    """Create the directories, cookie and config files of this RabbitMQ instance."""
    make_dirs(None, layout.root)
    check_reachable(layout.rabbit, account)
    make_dirs(account, layout.rabbit, layout.rabbit_home, layout.mnesia, layout.rabbit_logs)
    cookie = layout.rabbit_home / ".erlang.cookie"
    if not cookie.exists():
        # Erlang refuses a cookie file that others can read.
        write_file(cookie, secrets.token_hex(20), account, mode=0o400)
    creds = credentials.load_or_create(creds_dir(cfg))
    # Holds the admin's password: readable by the rabbitmq user only.
    write_file(layout.rabbit / "rabbitmq.conf", _rabbit_conf(cfg, creds), account, mode=0o600)
    write_file(layout.rabbit / "enabled_plugins", "[rabbitmq_management].\n", account)
    write_file(layout.rabbit / "rabbitmq-env.conf", "", account)
    layout.rabbit_pid.unlink(missing_ok=True)


def launch_rabbitmq(cfg: ServerConfig, layout: Layout) -> None:
    """Start rabbitmq-server in the foreground of a detached session, as the rabbitmq user."""
    binary = require_binary("rabbitmq-server")
    require_binary("rabbitmqctl")
    account = service_account(RABBITMQ_USER)
    ports = {"amqp": cfg.amqp_port, "dist": cfg.dist_port, "management": cfg.management_port}
    refuse_busy_ports(ports, layout.rabbit_log)
    _prepare_rabbitmq(cfg, layout, account)
    LAUNCHED[layout.rabbit_pid] = popen_as(
        [binary], account, _rabbit_env(cfg, layout), layout.rabbit_startup_log
    )


def _rabbit_failure(cfg: ServerConfig, layout: Layout, what: str) -> ServersError:
    """A ServersError for RabbitMQ that quotes its logs."""
    return ServersError(
        f"rabbitmq node {cfg.node_name}: {what}; see {layout.rabbit_log}\n"
        f"{log_tail(layout.rabbit_startup_log, layout.rabbit_log)}"
    )


def _launched_alive(layout: Layout) -> bool:
    """False once a rabbitmq-server we launched has exited (a crashed boot)."""
    proc = LAUNCHED.get(layout.rabbit_pid)
    return proc is None or proc.poll() is None


def await_rabbitmq(
    cfg: ServerConfig, layout: Layout, deadline: float, progress: Progress
) -> None:
    """Wait until AMQP, `rabbitmqctl await_startup` and the management API all answer."""
    crashed: list[bool] = []

    def amqp_up() -> bool:
        if not _launched_alive(layout):
            crashed.append(True)
            return True
        # A bare connect is not logged, unlike an AMQP header probe (one warning per poll);
        # await_startup below is the real readiness check.
        return port_open(cfg.amqp_port)

    if not wait_for(amqp_up, deadline):
        raise _rabbit_failure(cfg, layout, f"AMQP port {cfg.amqp_port} did not answer in time")
    if crashed:
        raise _rabbit_failure(cfg, layout, "rabbitmq-server exited during startup")
    progress(f"rabbitmq: AMQP port open on 127.0.0.1:{cfg.amqp_port}; awaiting full startup")
    remaining = deadline - time.monotonic()
    result = rabbitmqctl(
        cfg, ["await_startup", "--timeout", str(max(int(remaining), 1))], remaining
    )
    if result.returncode != 0:
        raise _rabbit_failure(
            cfg,
            layout,
            f"`rabbitmqctl await_startup` failed: {(result.stderr or result.stdout).strip()}",
        )
    if not wait_for(lambda: _management_answers(cfg.management_port), deadline):
        raise _rabbit_failure(
            cfg, layout, f"management API did not answer on 127.0.0.1:{cfg.management_port}"
        )


def start_rabbitmq(cfg: ServerConfig, progress: Progress, timeout: float = START_TIMEOUT) -> None:
    """Start this instance's RabbitMQ unless it runs already; return once it fully answers."""
    layout = Layout.of(cfg)
    started = time.monotonic()
    pid = rabbit_pid(cfg)
    if pid is not None:
        progress(f"rabbitmq: already running (node {cfg.node_name}, pid {pid})")
    else:
        launch_rabbitmq(cfg, layout)
        progress(
            f"rabbitmq: starting node {cfg.node_name} (AMQP 127.0.0.1:{cfg.amqp_port}, "
            f"management 127.0.0.1:{cfg.management_port}); log {layout.rabbit_log}"
        )
    await_rabbitmq(cfg, layout, started + timeout, progress)
    ensure_accounts(cfg, progress)
    progress(f"rabbitmq: ready after {time.monotonic() - started:.1f}s")


def stop_rabbitmq(cfg: ServerConfig, progress: Progress, timeout: float = STOP_TIMEOUT) -> None:
    """Stop this instance's RabbitMQ node cleanly (rabbitmqctl stop); no-op if stopped."""
    layout = Layout.of(cfg)
    pid = rabbit_pid(cfg)
    if pid is None:
        reap(layout.rabbit_pid)
        progress("rabbitmq: not running")
        return
    progress(f"rabbitmq: stopping node {cfg.node_name} (pid {pid})")
    # With the pid file argument, `stop` returns only after the VM has exited.
    result = rabbitmqctl(cfg, ["stop", str(layout.rabbit_pid)], timeout)
    if result.returncode != 0:
        progress(f"rabbitmq: rabbitmqctl stop failed ({result.stderr.strip()}); sending SIGTERM")
        terminate(pid, "beam", timeout)
    reap(layout.rabbit_pid)
    ports = (cfg.amqp_port, cfg.management_port, cfg.dist_port)
    if not wait_for(lambda: not any(map(port_open, ports)), time.monotonic() + timeout):
        raise _rabbit_failure(cfg, layout, f"ports {ports} still open after stopping pid {pid}")
    progress("rabbitmq: stopped")
