"""scripts/servers: start, stop, status and rotate from flags and TRUST_* variables."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from broker.devkit.install import ensure_installed
from broker.devkit.layout import ServerConfig, ServersError
from broker.devkit.servers import SETTINGS, remembered, rotate, start, status, stop

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
