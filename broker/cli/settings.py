"""Where the command line's configuration comes from: flags, then TRUST_* variables, then
defaults that follow the local servers (their ports, and the logins the run directory's
credentials.json holds; there are no default credentials)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from broker.config import BrokerConfig
from broker.devkit.layout import SENTINEL_SERVICE, ServerConfig
from broker.errors import ConfigError


def server_config(env: Mapping[str, str]) -> ServerConfig:
    """Local server ports and directories from TRUST_* variables."""
    defaults = ServerConfig(run_dir=Path(".run"))
    return ServerConfig(
        run_dir=Path(env.get("TRUST_RUN_DIR", str(defaults.run_dir))),
        amqp_port=int(env.get("TRUST_AMQP_PORT", defaults.amqp_port)),
        dist_port=int(env.get("TRUST_DIST_PORT", defaults.dist_port)),
        management_port=int(env.get("TRUST_MANAGEMENT_PORT", defaults.management_port)),
        redis_port=int(env.get("TRUST_REDIS_PORT", defaults.redis_port)),
        node_name=env.get("TRUST_NODE_NAME", defaults.node_name),
        nodes=int(env.get("TRUST_RABBITMQ_NODES", defaults.nodes)),
        sentinel=env.get("TRUST_REDIS_SENTINEL", "") in ("1", "true", "yes"),
        sentinel_port=int(env.get("TRUST_SENTINEL_PORT", defaults.sentinel_port)),
    )


def broker_config(env: Mapping[str, str], args: argparse.Namespace) -> BrokerConfig:
    """Router/client settings: flags beat TRUST_* variables, which beat defaults that
    follow the local servers (their ports, and the logins in the run directory's
    credentials.json; there are no default credentials)."""
    local = local_urls(server_config(env))
    ports = server_config(env)
    return BrokerConfig(
        amqp_url=args.amqp_url or env.get("TRUST_AMQP_URL", local["admin_amqp"]),
        redis_url=args.redis_url or env.get("TRUST_REDIS_URL", local["redis"]),
        management_url=args.management_url or env.get("TRUST_MANAGEMENT_URL", local["management"]),
        admin_amqp_url=env.get("TRUST_ADMIN_AMQP_URL", ""),
        reply_amqp_url=env.get("TRUST_REPLY_AMQP_URL", ""),
        vhost=args.vhost or env.get("TRUST_VHOST", "/"),
        key_prefix=args.key_prefix or env.get("TRUST_KEY_PREFIX", "tb:"),
        broker_key_file=env.get("TRUST_BROKER_KEY", str(ports.run_dir / "broker.key")),
        trace_ttl_ms=_hours_ms(env, "TRUST_TRACE_TTL_HOURS", 24),
    )


def local_urls(ports: ServerConfig) -> dict[str, str]:
    """The local servers' URLs for each account, from the run directory's credentials
    (no login at all when the servers never started there)."""
    from broker.devkit import credentials
    from broker.ops.provision import with_login

    creds = credentials.load(ports.run_dir)
    hosts = [f"127.0.0.1:{port}" for port in ports.amqp_ports]
    bare = ",".join(f"amqp://{host}/" for host in hosts)
    management = ",".join(f"http://127.0.0.1:{port}/" for port in ports.management_ports)
    password = creds.redis_password if creds else ""
    auth = f":{password}@" if password else ""
    redis = f"redis://{auth}127.0.0.1:{ports.redis_port}/0"
    if ports.sentinel:
        sentinels = ",".join(f"127.0.0.1:{port}" for port in ports.sentinel_ports)
        redis = f"redis+sentinel://{auth}{sentinels}/{SENTINEL_SERVICE}/0"
    if creds is None:
        return {"admin_amqp": bare, "router_amqp": bare, "reply_amqp": "", "redis": redis,
                "management": management}  # fmt: skip

    def login(urls: str, user: str, secret: str) -> str:
        return ",".join(with_login(url, user, secret) for url in urls.split(","))

    return {
        "admin_amqp": login(bare, creds.admin_user, creds.admin_password),
        "router_amqp": login(bare, creds.router_user, creds.router_password),
        "reply_amqp": login(bare, creds.negotiator_user, creds.negotiator_password),
        "redis": redis,
        "management": login(management, creds.admin_user, creds.admin_password),
    }


def _hours_ms(env: Mapping[str, str], name: str, default: float) -> int:
    raw = env.get(name, "")
    try:
        hours = float(raw) if raw else default
    except ValueError:
        hours = -1
    if not 0 < hours <= 24 * 365:
        raise ConfigError(f"{name} must be a number of hours above 0 (up to a year), not {raw!r}")
    return int(hours * 3_600_000)


def router_logins(config: BrokerConfig, env: Mapping[str, str]) -> BrokerConfig:
    """The router's least-privilege logins: TRUST_ROUTER_AMQP_URL (and TRUST_REPLY_AMQP_URL),
    else the local servers' router account; TRUST_AMQP_URL alone keeps one login for all."""
    from dataclasses import replace

    local = local_urls(server_config(env))
    explicit = "TRUST_AMQP_URL" in env
    router = env.get("TRUST_ROUTER_AMQP_URL") or ("" if explicit else local["router_amqp"])
    if not router:
        return config
    reply = env.get("TRUST_REPLY_AMQP_URL") or ("" if explicit else local["reply_amqp"])
    return replace(config, amqp_url=router, reply_amqp_url=reply, admin_amqp_url=config.admin_url)
