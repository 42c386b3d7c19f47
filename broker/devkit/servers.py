"""Start, stop, inspect and re-key the local servers as one pair (or a cluster, with
Sentinels, when the configuration asks for it), without Docker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from broker.devkit import cluster, credentials
from broker.devkit.layout import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Layout,
    Progress,
    ServerConfig,
    ServersError,
    creds_dir,
)
from broker.devkit.processes import port_open
from broker.devkit.rabbitmq_server import ctl_or_fail, rabbit_pid, start_rabbitmq, stop_rabbitmq
from broker.devkit.redis_server import (
    redis_command,
    redis_password,
    redis_pid,
    redis_ping,
    start_redis,
    stop_redis,
)


def start(cfg: ServerConfig, progress: Progress, timeout: float = START_TIMEOUT) -> None:
    """Start whichever of Redis and RabbitMQ is not running; return once both answer
    (every cluster node, replica and Sentinel too, when cfg asks for them)."""
    started = time.monotonic()
    start_redis(cfg, progress, timeout)
    if cfg.sentinel:
        cluster.start_sentinel_group(cfg, progress, timeout)
    if cfg.nodes > 1:
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
    old = credentials.load(creds_dir(cfg))
    if old is None:
        raise ServersError(f"no {credentials.path_in(creds_dir(cfg))}: start the servers first")
    new = old.rotated()
    for user, password in ((new.admin_user, new.admin_password),
                           (new.router_user, new.router_password),
                           (new.negotiator_user, new.negotiator_password)):  # fmt: skip
        ctl_or_fail(cfg, ["change_password", user, password])
    ports = [cfg.redis_port] + ([cfg.redis_port + 1] if cfg.sentinel else [])
    for port in ports:
        for key in ("masterauth", "requirepass"):
            redis_command(port, old.redis_password, "CONFIG", "SET", key, new.redis_password)
        redis_command(port, new.redis_password, "CONFIG", "REWRITE")
    credentials.save(creds_dir(cfg), new)
    progress(f"new passwords in force and written to {credentials.path_in(creds_dir(cfg))}")
    if cfg.sentinel:
        progress("Sentinels keep the old Redis password until restarted with their files edited")


def status(cfg: ServerConfig) -> dict[str, object]:
    """Whether this instance's servers run and answer, with their ports, pids and logs."""
    layout = Layout.of(cfg)
    rabbit = rabbit_pid(cfg)
    redis = redis_pid(cfg)
    return {
        "rabbitmq": {
            "running": rabbit is not None and port_open(cfg.amqp_port),
            "pid": rabbit,
            "node_name": cfg.node_name,
            "amqp_port": cfg.amqp_port,
            "management_port": cfg.management_port,
            "dist_port": cfg.dist_port,
            "log": str(layout.rabbit_log),
        },
        "redis": {
            "running": redis is not None and redis_ping(cfg.redis_port, redis_password(cfg)),
            "pid": redis,
            "port": cfg.redis_port,
            "log": str(layout.redis_log),
        },
        **_cluster_status(cfg),
    }


def _cluster_status(cfg: ServerConfig) -> dict[str, object]:
    """The extra nodes, replica and Sentinels, when there are any."""
    extra: dict[str, object] = {}
    if cfg.nodes > 1:
        members = cluster.node_status(cfg)
        extra["cluster"] = {"running": all(m["running"] for m in members), "nodes": members}
    if cfg.sentinel:
        password = redis_password(cfg)
        follower = cluster.replica(cfg)
        up = [redis_ping(port, password) for port in (follower.redis_port, *cfg.sentinel_ports)]
        extra["sentinel"] = {
            "running": all(up), "replica_port": follower.redis_port,
            "sentinel_ports": list(cfg.sentinel_ports), "master_port": cluster.master_port(cfg),
        }  # fmt: skip
    return extra
