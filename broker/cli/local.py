"""The commands that run things: a router, `setup` of a vhost, the local servers, the demo,
and `decode` of an envelope file."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from broker.cli.settings import router_logins, server_config
from broker.cli.support import command, json_flag, print_json, say
from broker.config import BrokerConfig
from broker.devkit import servers
from broker.devkit.install import ensure_installed
from broker.errors import ConfigError


async def cmd_router(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Run one router until SIGINT/SIGTERM."""
    from dataclasses import replace

    from broker.app import run_router
    from broker.router.metrics import DEFAULT_PORT

    config = router_logins(config, os.environ)
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


async def cmd_setup(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Create the vhost, grant the service accounts and declare the topology (admin)."""
    from broker.devkit import credentials
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
    from broker.core.envelope import decode_envelope, signature_valid

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


def add_commands(sub: Any) -> None:
    """Register router, setup, servers, demo and decode on the trust-broker parser."""
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
