"""A RabbitMQ cluster, and Redis with a replica and Sentinels, on one machine.

The same Debian packages as broker.devkit.servers, as the project's own processes under the
run directory: node 0 is the single node broker.devkit.servers runs anyway; node i listens on
the base ports + i, keeps its data under <run dir>/node<i+1>/ and joins node 0. Every
queue the broker declares is a quorum queue (or a stream) and so is replicated on all
nodes. The Redis replica (port + 1) follows the master; three Sentinels (quorum 2)
promote it when the master dies, and rewrite the configuration files they own.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from broker.devkit import credentials
from broker.devkit.install import require_binary
from broker.devkit.layout import (
    RABBITMQ_USER,
    REDIS_USER,
    SENTINEL_SERVICE,
    STOP_TIMEOUT,
    Layout,
    Progress,
    ServerConfig,
    ServersError,
    creds_dir,
)
from broker.devkit.processes import (
    alive,
    chown,
    live_pid,
    make_dirs,
    port_open,
    reap,
    service_account,
    terminate,
    wait_for,
    write_file,
)
from broker.devkit.rabbitmq_server import (
    await_rabbitmq,
    ctl_or_fail,
    ensure_accounts,
    launch_rabbitmq,
    rabbit_pid,
    rabbitmqctl,
    stop_rabbitmq,
)
from broker.devkit.redis_server import launch_redis, redis_pid, redis_ping, stop_redis

NODE_DOWN_AFTER_MS = 3_000  # Sentinel: how long the master may be silent before a failover


# ---------------------------------------------------------------- RabbitMQ nodes


def node(cfg: ServerConfig, index: int) -> ServerConfig:
    """The ServerConfig of cluster node `index` (0 is cfg itself)."""
    if index == 0:
        return cfg
    name, at, host = cfg.node_name.partition("@")
    return replace(
        cfg,
        run_dir=cfg.run_dir / f"node{index + 1}",
        amqp_port=cfg.amqp_port + index,
        management_port=cfg.management_port + index,
        dist_port=cfg.dist_port + index,
        node_name=f"{name}-n{index + 1}{at}{host}",
        sentinel=False,
        secrets_dir=cfg.secrets_dir or cfg.run_dir,
    )


def nodes(cfg: ServerConfig) -> list[ServerConfig]:
    """Every node of the cluster, node 0 first."""
    return [node(cfg, i) for i in range(cfg.nodes)]


def _full_name(cfg: ServerConfig) -> str:
    """name@host as the node calls itself (the CLI's -n takes the short form)."""
    done = rabbitmqctl(cfg, ["eval", "node()."], 30)
    if done.returncode != 0:
        raise ServersError(f"node {cfg.node_name}: {done.stderr.strip() or done.stdout.strip()}")
    # Printed as an Elixir atom: name@host, or :"name-with-dashes@host".
    return done.stdout.strip().lstrip(":").strip("'\"")


def _share_cookie(primary: ServerConfig, other: ServerConfig) -> None:
    """Nodes of one cluster authenticate to each other with the same Erlang cookie."""
    source = Layout.of(primary).rabbit_home / ".erlang.cookie"
    layout = Layout.of(other)
    account = service_account(RABBITMQ_USER)
    make_dirs(None, layout.root)
    make_dirs(account, layout.rabbit, layout.rabbit_home)
    target = layout.rabbit_home / ".erlang.cookie"
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    if target.exists():
        target.chmod(0o600)
    shutil.copyfile(source, target)
    target.chmod(0o400)
    chown(target, account)


def start_cluster(cfg: ServerConfig, progress: Progress, timeout: float) -> None:
    """Start every node that is not running, together (a cluster stopped whole waits for
    its peers while booting), then join the new ones to node 0."""
    deadline = time.monotonic() + timeout
    members = nodes(cfg)
    primary = members[0]
    if rabbit_pid(primary) is None:
        launch_rabbitmq(primary, Layout.of(primary))
        progress(f"rabbitmq: starting node {primary.node_name} (AMQP :{primary.amqp_port})")
    for member in members[1:]:
        if rabbit_pid(member) is None:
            _share_cookie(primary, member)
            launch_rabbitmq(member, Layout.of(member))
            progress(f"rabbitmq: starting node {member.node_name} (AMQP :{member.amqp_port})")
    for member in members[1:]:
        if rabbit_pid(member) is not None and not port_open(member.amqp_port):
            # Left with its app stopped (an interrupted join): start it again.
            rabbitmqctl(member, ["start_app"], 120)
    for member in members:
        _await_booted(member, deadline, progress)
    ensure_accounts(primary, progress)
    leader = _full_name(primary)
    for member in members[1:]:
        _join(member, leader, progress)
    progress(f"rabbitmq: cluster of {len(members)} nodes ready")


def _await_booted(
    member: ServerConfig, deadline: float, progress: Progress, attempts: int = 3
) -> None:
    """Wait for one node to boot. Nodes of a cluster stopped whole boot together, and
    RabbitMQ 3.10 can crash a node that syncs its feature flags with a peer still booting
    (`incompatible_feature_flags ... badmap`, seen in the fault suite's restart-cluster):
    such a node is simply started again once that peer is further along."""
    for attempt in range(1, attempts + 1):
        try:
            await_rabbitmq(member, Layout.of(member), deadline, progress)
            return
        except ServersError as err:
            if attempt == attempts or "incompatible_feature_flags" not in str(err):
                raise
        progress(f"rabbitmq: node {member.node_name} lost the feature-flag race at boot; again")
        time.sleep(2.0)
        launch_rabbitmq(member, Layout.of(member))


def _join(member: ServerConfig, leader: str, progress: Progress) -> None:
    """Make `member` part of `leader`'s cluster (a no-op when it already is)."""
    status = rabbitmqctl(member, ["cluster_status", "--formatter", "json"], 60)
    try:
        known = json.loads(status.stdout).get("disk_nodes", [])
    except ValueError:
        known = []
    if leader in known:
        return
    for args in (["stop_app"], ["join_cluster", leader], ["start_app"]):
        ctl_or_fail(member, args)
    progress(f"rabbitmq: {member.node_name} joined {leader}")


def stop_cluster(cfg: ServerConfig, progress: Progress, timeout: float) -> None:
    """Stop every node cleanly, the extra ones first."""
    for member in reversed(nodes(cfg)):
        stop_rabbitmq(member, progress, timeout)


def kill_node(cfg: ServerConfig, index: int) -> None:
    """SIGKILL node `index` (fault injection); returns once its AMQP port is closed."""
    member = node(cfg, index)
    pid = rabbit_pid(member)
    if pid is None:
        return
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: not alive(pid, "beam") and not port_open(member.amqp_port),
        time.monotonic() + STOP_TIMEOUT,
    )
    reap(Layout.of(member).rabbit_pid)


def node_status(cfg: ServerConfig) -> list[dict[str, object]]:
    """running/pid/ports of every node."""
    return [
        {
            "node_name": member.node_name,
            "running": rabbit_pid(member) is not None
            and port_open(member.amqp_port),
            "pid": rabbit_pid(member),
            "amqp_port": member.amqp_port,
            "management_port": member.management_port,
        }
        for member in nodes(cfg)
    ]


# ---------------------------------------------------------------- Redis replica, Sentinels


def replica(cfg: ServerConfig) -> ServerConfig:
    """The Redis replica's ServerConfig (port + 1, its own directory)."""
    return replace(
        cfg,
        run_dir=cfg.run_dir / "redis-replica",
        redis_port=cfg.redis_port + 1,
        nodes=1,
        secrets_dir=cfg.secrets_dir or cfg.run_dir,
    )


def _sentinel_dir(cfg: ServerConfig, index: int) -> Path:
    return cfg.run_dir.resolve() / f"sentinel-{index + 1}"


def _sentinel_conf(cfg: ServerConfig, index: int, password: str) -> str:
    home = _sentinel_dir(cfg, index)
    service = SENTINEL_SERVICE
    return "\n".join(
        [
            "bind 127.0.0.1",
            f"port {cfg.sentinel_ports[index]}",
            "daemonize yes",
            f'pidfile "{home / "sentinel.pid"}"',
            f'logfile "{home / "sentinel.log"}"',
            f'dir "{home}"',
            f"requirepass {password}",
            f"sentinel sentinel-pass {password}",
            f"sentinel monitor {service} 127.0.0.1 {cfg.redis_port} 2",
            f"sentinel auth-pass {service} {password}",
            f"sentinel down-after-milliseconds {service} {NODE_DOWN_AFTER_MS}",
            f"sentinel failover-timeout {service} 15000",
            f"sentinel parallel-syncs {service} 1",
            "",
        ]
    )


def start_sentinel_group(cfg: ServerConfig, progress: Progress, timeout: float) -> None:
    """The replica of cfg's Redis, then three Sentinels watching it (each once only)."""
    deadline = time.monotonic() + timeout
    password = credentials.load_or_create(creds_dir(cfg)).redis_password
    follower = replica(cfg)
    if redis_pid(follower) is None:
        launch_redis(follower, Layout.of(follower), password,
                              f"replicaof 127.0.0.1 {cfg.redis_port}")  # fmt: skip
        progress(f"redis: starting the replica on 127.0.0.1:{follower.redis_port}")
    account = service_account(REDIS_USER)
    binary = require_binary("redis-sentinel")
    for index, port in enumerate(cfg.sentinel_ports):
        home = _sentinel_dir(cfg, index)
        if live_pid(home / "sentinel.pid", "redis-sentinel") is not None:
            continue
        make_dirs(account, home)
        conf = home / "sentinel.conf"
        if not conf.exists():  # Sentinel rewrites its own file: never regenerate it
            write_file(conf, _sentinel_conf(cfg, index, password), account, mode=0o600)
        _daemon([binary, str(conf)], home, account)
        progress(f"redis: starting Sentinel on 127.0.0.1:{port}")
    for port in (follower.redis_port, *cfg.sentinel_ports):
        if not wait_for(_answers(port, password), deadline):
            raise ServersError(f"redis/sentinel on 127.0.0.1:{port} did not answer in time")
    progress("redis: replica and Sentinels ready")


def _answers(port: int, password: str) -> Callable[[], bool]:
    return lambda: redis_ping(port, password)


def stop_sentinel_group(cfg: ServerConfig, progress: Progress, timeout: float) -> None:
    """Stop the Sentinels (first, so they fail nothing over) and the replica."""
    for index in range(len(cfg.sentinel_ports)):
        pid = live_pid(_sentinel_dir(cfg, index) / "sentinel.pid", "redis-sentinel")
        if pid is not None:
            terminate(pid, "redis-sentinel", timeout)
    if cfg.sentinel:
        stop_redis(replica(cfg), progress, timeout)


def _daemon(cmd: list[str], home: Path, account: pwd.struct_passwd | None) -> None:
    """Run a server that daemonizes itself, as the service account."""
    done = subprocess.run(
        cmd, cwd=home, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        check=False, start_new_session=True,
        user=account.pw_uid if account else None, group=account.pw_gid if account else None,
        extra_groups=[] if account else None,
    )  # fmt: skip
    if done.returncode != 0:
        raise ServersError(f"{cmd[0]} exited with {done.returncode}: {done.stdout}{done.stderr}")


def master_port(cfg: ServerConfig) -> int | None:
    """The port of the Redis the Sentinels currently call master (None if none says)."""
    password = credentials.load_or_create(creds_dir(cfg)).redis_password
    ask = ["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE]
    for port in cfg.sentinel_ports:
        words = _resp_words(port, password, ask)
        if len(words) == 2 and words[1].isdigit():
            return int(words[1])
    return None


def _resp_words(port: int, password: str, command: list[str]) -> list[str]:
    """The bulk strings of one RESP array reply (after AUTH), e.g. ['127.0.0.1', '6410']."""
    payload = f"AUTH {password}\r\n{' '.join(command)}\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(payload)
            data = b""
            while data.count(b"\r\n") < 6:
                chunk = sock.recv(512)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return []
    lines = data.split(b"\r\n")[1:]  # past AUTH's +OK
    return [line.decode() for line in lines if line and not line.startswith((b"*", b"$"))]
