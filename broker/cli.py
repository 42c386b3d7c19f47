"""trust-broker command line. It, cli_*, and devkit/ (what it runs locally) are the only
modules that read the environment (tests/unit/test_layers.py).

This module holds what every command shares (configuration, errors, the parser) and the
commands that run things locally (router, servers, demo, decode). The command groups
live beside it: cli_agent (what an agent does), cli_ops (provision, issuers, evidence,
revocation, peers, traces), cli_policy, cli_review (blocked stream, escalations) and
console/cli.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from broker.cli_support import HelpFormatter, command, json_flag, os_account, print_json, say
from broker.config import BrokerConfig
from broker.devkit import servers
from broker.devkit.install import ensure_installed
from broker.devkit.layout import SENTINEL_SERVICE, ServerConfig
from broker.errors import ConfigError

__all__ = ["broker_config", "build_parser", "main", "print_json", "server_config"]

Handler = Callable[[argparse.Namespace, BrokerConfig], Coroutine[Any, Any, int]]
# Exit status of a command whose output pipe closed early (`... | head`), as for SIGPIPE.
BROKEN_PIPE = 141


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
    from broker import credentials
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


# -- local commands -------------------------------------------------------------------------


async def cmd_router(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Run one router until SIGINT/SIGTERM."""
    from dataclasses import replace

    from broker.app import run_router
    from broker.metrics import DEFAULT_PORT

    config = _router_logins(config, os.environ)
    if config.admin_amqp_url and config.admin_amqp_url != config.amqp_url:
        # The router's own login declares nothing: with the admin's at hand (local
        # servers), the topology is declared first, as `trust-broker setup` would.
        await cmd_setup(args, config)
    if args.prefetch:
        config = replace(config, prefetch=args.prefetch)
    if args.lane_prefetch:
        config = replace(config, lane_prefetch=args.lane_prefetch)
    # --metrics-port is exact; TRUST_METRICS_PORT (or 9108) is where the search for a free
    # port starts, so every router on a host that shares the environment still gets one.
    port, explicit = args.metrics_port, args.metrics_port is not None
    if port is None:
        port = int(os.environ.get("TRUST_METRICS_PORT") or DEFAULT_PORT)
    config = replace(config, metrics_port=port)
    await run_router(config, metrics_port_explicit=explicit)
    return 0


def _router_logins(config: BrokerConfig, env: Mapping[str, str]) -> BrokerConfig:
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


async def cmd_setup(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Create the vhost, grant the service accounts and declare the topology (admin)."""
    from broker import credentials
    from broker.ops.provision import setup_vhost

    # TRUST_SETUP_ACCOUNTS=router=NAME,negotiator=NAME names the service users where
    # there is no local credentials file (docker-compose.yml).
    named = os.environ.get("TRUST_SETUP_ACCOUNTS", "")
    accounts = dict(pair.split("=", 1) for pair in named.split(",") if "=" in pair)
    creds = credentials.load(server_config(os.environ).run_dir)
    if not accounts and creds is not None:
        accounts = creds.accounts()
    await setup_vhost(config, accounts)
    print(f"vhost {config.vhost!r}: topology declared, service accounts granted", file=sys.stderr)
    return 0


async def cmd_servers(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Start, stop or report the local RabbitMQ and Redis."""
    cfg = server_config(os.environ)
    if args.action != "start":
        cfg = servers.remembered(cfg, os.environ)

    def progress(text: str) -> None:
        say(f"[servers] {text}")

    if args.action == "start":
        await asyncio.to_thread(ensure_installed, progress)
        await asyncio.to_thread(servers.start, cfg, progress)
    elif args.action == "stop":
        await asyncio.to_thread(servers.stop, cfg, progress)
    status = servers.status(cfg)
    if args.json or args.action == "status":
        print_json(status)
    return 0


async def cmd_demo(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Run the scripted scenario against real servers and print the decisions."""
    from broker.devkit.demo import run_demo

    if not args.no_start_servers:
        await cmd_servers(argparse.Namespace(action="start", json=False), config)
    return await run_demo(config, keep_running=args.keep_running)


async def cmd_decode(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Validate an envelope file and explain what is wrong with it, if anything."""
    from broker.envelope import decode_envelope, signature_valid

    path = Path(args.file)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    decoded = decode_envelope(raw)
    env = decoded.envelope
    ok = signature_valid(decoded)
    if args.json:
        print_json({"valid": ok, "id": env.id, "sender": env.sender, "signature_valid": ok})
    elif ok:
        print(f"valid: envelope {env.id} from {env.sender}, signature verified")
    else:
        print(
            f"INVALID: envelope {env.id} decodes, but its signature does not verify against "
            f"{env.sender}: the bytes are not what that key signed"
        )
    return 0 if ok else 1


# -- parser ---------------------------------------------------------------------------------

DESCRIPTION = """\
Message-layer trust broker for AI agents. Every inter-agent message is scored on five
weighted dimensions (identity, reputation, compliance, behavioral, stake) before it can
reach an agent's queue, and is delivered, blocked or escalated.

Connection settings come from flags, then TRUST_AMQP_URL, TRUST_REDIS_URL,
TRUST_MANAGEMENT_URL, TRUST_VHOST, TRUST_KEY_PREFIX; local server ports from
TRUST_AMQP_PORT, TRUST_REDIS_PORT, TRUST_MANAGEMENT_PORT, TRUST_DIST_PORT, TRUST_RUN_DIR.
Decisions are recorded under --reviewer/--who, else TRUST_REVIEWER, else the OS account.

Start with README.md's walkthrough; `trust-broker COMMAND --help` explains each command."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    from broker import cli_agent, cli_federation, cli_ops, cli_policy, cli_reports, cli_review
    from broker.console.cli import add_console_commands

    parser = argparse.ArgumentParser(
        prog="trust-broker", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    parser.add_argument("--amqp-url", help="router AMQP URL (env TRUST_AMQP_URL)")
    parser.add_argument("--redis-url", help="Redis URL (env TRUST_REDIS_URL)")
    parser.add_argument("--management-url", help="RabbitMQ management API URL")
    parser.add_argument("--vhost", help="RabbitMQ virtual host (env TRUST_VHOST; default /)")
    parser.add_argument("--key-prefix", help="Redis key prefix (env TRUST_KEY_PREFIX; default tb:)")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("TRUST_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG logs one JSON line per decision (no message bodies, no secrets)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, print the full traceback too"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    person = os_account(os.environ)
    cli_agent.add_commands(sub)
    cli_ops.add_commands(sub)
    cli_federation.add_commands(sub)
    cli_policy.add_commands(sub, default_who=person)
    cli_review.add_review_commands(sub, default_reviewer=person)
    cli_reports.add_commands(sub, default_reviewer=person)
    add_console_commands(sub)
    _add_local_commands(sub)
    return parser


def _add_local_commands(sub: Any) -> None:
    p = command(
        sub, "router",
        summary="run a router (consume ingress, decide, route)",
        description="Run one router until SIGINT/SIGTERM. Start several for more throughput: "
        "they compete for the same ingress queue. Each serves Prometheus metrics on "
        "127.0.0.1; without --metrics-port it takes the first free port from "
        "TRUST_METRICS_PORT (default 9108) on, so routers on one host do not collide.",
        examples=["trust-broker router", "trust-broker router --metrics-port 9200 --prefetch 256"],
    )  # fmt: skip
    p.add_argument(
        "--prefetch", type=int, help="unacked trust.ingress messages in flight (default 512)"
    )
    p.add_argument(
        "--lane-prefetch", type=int,
        help="unacked messages in flight per agent's lane (default 16; smaller is fairer)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics on exactly 127.0.0.1:PORT, refused if taken (default: the "
        "first free port from TRUST_METRICS_PORT, else 9108, on; 0 turns it off)",
    )
    p.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default=None,
        help="event loop (env TRUST_EVENT_LOOP; default asyncio; auto: uvloop when "
        "installed; uvloop needs pip install 'trust-broker[uvloop]')",
    )
    p.set_defaults(handler=cmd_router)

    p = command(
        sub, "setup",
        summary="declare the topology and grant the service accounts (admin login)",
        description="With the admin login (TRUST_AMQP_URL / TRUST_MANAGEMENT_URL, or the "
        "local run directory's credentials.json): create the vhost, give the router and "
        "negotiator accounts their permissions and declare every exchange and queue. "
        "Routers declare nothing themselves; run it once per vhost, and again after an "
        "upgrade that adds exchanges or queues.",
        examples=["trust-broker setup", "trust-broker --vhost prod setup"],
    )  # fmt: skip
    p.set_defaults(handler=cmd_setup)

    p = command(
        sub, "servers",
        summary="start/stop/status of local RabbitMQ and Redis",
        description="Run RabbitMQ and Redis from Debian's packages as the project's own "
        "processes (data and logs under TRUST_RUN_DIR, default .run/). Installs them with "
        "apt-get when missing and run as root. `start` remembers the ports and node name "
        "in the run directory, so `stop` and `status` find the same servers without "
        "repeating them.",
        examples=["trust-broker servers start", "trust-broker servers status",
                  "TRUST_RUN_DIR=/tmp/tb trust-broker servers stop"],
    )  # fmt: skip
    p.add_argument("action", choices=["start", "stop", "status"])
    json_flag(p)
    p.set_defaults(handler=cmd_servers)

    p = command(
        sub, "demo",
        summary="scripted scenario: deliver, probation, block, escalate",
        description="Start the local servers (unless --no-start-servers), a router and demo "
        "agents, play a scripted scenario and print a table of the decisions.",
        examples=["trust-broker demo", "trust-broker demo --no-start-servers --keep-running"],
    )  # fmt: skip
    p.add_argument("--no-start-servers", action="store_true", help="use servers already running")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the router and agents running after the scenario",
    )
    p.set_defaults(handler=cmd_demo)

    p = command(
        sub, "decode",
        summary="validate an envelope file and check its signature",
        description="Decode FILE as an envelope (the wire format of docs/PROTOCOL.md) and "
        "verify its signature against the sender's did:key. Exit status 0 when it is "
        "valid and signed by its sender, 1 otherwise, with what is wrong.",
        examples=["trust-broker decode message.json"],
    )  # fmt: skip
    p.add_argument("file", help="envelope JSON file")
    json_flag(p)
    p.set_defaults(handler=cmd_decode)


def event_loop_factory(
    args: argparse.Namespace, env: Mapping[str, str]
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The router's event loop: asyncio's own unless uvloop is asked for (`auto` takes
    it when installed); other commands always run on asyncio's. None means asyncio's."""
    choice = getattr(args, "loop", False)
    if choice is False:  # not the router: short commands gain nothing from uvloop
        return None
    choice = choice or env.get("TRUST_EVENT_LOOP", "asyncio")
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"TRUST_EVENT_LOOP must be auto, uvloop or asyncio, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "--loop uvloop: uvloop is not installed (pip install 'trust-broker[uvloop]')"
            ) from None
        return None
    return uvloop.new_event_loop


# -- running a command, and saying what went wrong ----------------------------------------


def _logging(level: str, command: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if level != "DEBUG":
        # aio-pika narrates connections and consumers at INFO, and logs a refused connection
        # as an ERROR before raising it: a short command says it once, in its own words. A
        # router keeps the warnings (lost connections, reconnections).
        quiet = logging.WARNING if command == "router" else logging.CRITICAL
        for name in ("aio_pika", "aiormq"):
            logging.getLogger(name).setLevel(quiet)


def explain(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    """One line: what failed, against which URL or file, and what to do about it."""
    from broker.cli_errors import explain_error

    return explain_error(exc, args, config)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the trust-broker console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _logging(args.log_level, args.command)
    handler: Handler = args.handler
    config: BrokerConfig | None = None
    try:
        config = broker_config(os.environ, args)
        with asyncio.Runner(loop_factory=event_loop_factory(args, os.environ)) as runner:
            return runner.run(handler(args, config))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `trust-broker ... | head`: the reader left; stop quietly, as other tools do (and
        # point stdout at /dev/null, or flushing it at exit fails once more).
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"trust-broker {args.command}: error: {explain(exc, args, config)}", file=sys.stderr)
        return 1
