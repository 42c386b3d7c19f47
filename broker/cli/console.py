"""`trust-broker console serve` and `trust-broker console add-user`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from broker.cli.support import command
from broker.config import BrokerConfig
from broker.console.auth import Role, load_users, new_token, save_users
from broker.errors import ConfigError

log = logging.getLogger("broker.console")


async def cmd_serve(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Serve the console until SIGINT/SIGTERM."""
    import uvicorn

    from broker.console.app import create_app
    from broker.core.identity import AgentKey
    from broker.sdk.keyfile import load_key

    users = load_users(Path(args.users))
    if not users.users:
        raise ConfigError(f"no users in {args.users}: add one with `trust-broker console add-user`")
    key_file = Path(config.broker_key_file)
    broker_key: AgentKey | None = load_key(key_file) if key_file.exists() else None
    app = create_app(config, users, secure_cookies=args.secure_cookies, broker_key=broker_key)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_config=None, server_header=False)
    )
    log.info("console on http://%s:%d/ for %d user(s)", args.host, args.port, len(users.users))
    await server.serve()
    return 0


async def cmd_add_user(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Add a user (or give an existing one a new role and token); print the token once."""
    path = Path(args.users)
    token = new_token()
    users = load_users(path)
    replaced = any(user.name == args.name for user in users.users)
    save_users(path, users.with_user(args.name, Role(args.role), token))
    print(token)
    verb = "replaced (the old token no longer works)" if replaced else "added"
    print(
        f"console user {args.name} ({args.role}) {verb} in {path}; the token above is shown "
        "only now: only its SHA-256 is kept",
        file=sys.stderr,
    )
    return 0


def add_commands(sub: Any) -> None:
    """Register `console serve` and `console add-user` on the trust-broker parser."""
    console = command(
        sub,
        "console",
        summary="web console and admin API (serve, add-user)",
        examples=[
            "trust-broker console add-user vera --role viewer --users console-users.json",
            "trust-broker console serve --port 8080 --users console-users.json",
        ],
        description="A web console for ops and security: live decisions, the blocked "
        "stream with explanations, escalations to approve or reject, peers, policy with "
        "what-if. Users sign in with a token; roles: viewer (look), security (release, "
        "approve, reject), ops (change policy).",
    )
    actions = console.add_subparsers(dest="console_command", required=True, metavar="ACTION")

    p = command(
        actions, "serve",
        summary="serve the console and admin API",
        description="Serve the web console and its admin API (OpenAPI at /api/openapi.json) "
        "on --host:--port until SIGINT/SIGTERM. Users sign in with the tokens add-user "
        "printed; scripts send them as `Authorization: Bearer TOKEN`.",
        examples=["trust-broker console serve --port 8080 --users console-users.json"],
    )  # fmt: skip
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--users", required=True, help="users file (from add-user)")
    p.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the session cookie Secure (when served over HTTPS, e.g. behind a proxy)",
    )
    p.set_defaults(handler=cmd_serve)

    p = command(
        actions, "add-user",
        summary="add a console user and print their token once",
        description="Add NAME with ROLE to the users file (created 0600 if missing) and "
        "print a new random token once. Only its SHA-256 is stored. Running it again for the "
        "same NAME replaces the role and the token. Roles: viewer (look), security (release, "
        "confirm, approve, reject), ops (change policy).",
        examples=["trust-broker console add-user sam --role security --users console-users.json"],
    )  # fmt: skip
    p.add_argument("name", help="the user's name, recorded with every decision they make")
    p.add_argument("--role", required=True, choices=[role.value for role in Role])
    p.add_argument("--users", required=True, help="users file to create or update")
    p.set_defaults(handler=cmd_add_user)
