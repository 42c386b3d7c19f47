"""trust-broker command line. The only module that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from broker import servers
from broker.app import open_store, run_router
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.envelope import MESSAGE_KINDS, PaymentIntent, decode_envelope
from broker.errors import ConfigError, TrustBrokerError
from broker.evidence import sign_evidence
from broker.identity import AgentKey, public_key_from_did
from broker.keyfile import load_key, save_key
from broker.state import RecipientProfile

DAY_MS = 86_400_000
Handler = Callable[[argparse.Namespace, BrokerConfig], Coroutine[Any, Any, int]]


def server_config(env: Mapping[str, str]) -> servers.ServerConfig:
    """Local server ports and directories from TRUST_* variables."""
    defaults = servers.ServerConfig(run_dir=Path(".run"))
    return servers.ServerConfig(
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


def local_urls(ports: servers.ServerConfig) -> dict[str, str]:
    """The local servers' URLs for each account, from the run directory's credentials
    (no login at all when the servers never started there)."""
    from broker import credentials
    from broker.provision import with_login

    creds = credentials.load(ports.run_dir)
    hosts = [f"127.0.0.1:{port}" for port in ports.amqp_ports]
    bare = ",".join(f"amqp://{host}/" for host in hosts)
    management = ",".join(f"http://127.0.0.1:{port}/" for port in ports.management_ports)
    password = creds.redis_password if creds else ""
    auth = f":{password}@" if password else ""
    redis = f"redis://{auth}127.0.0.1:{ports.redis_port}/0"
    if ports.sentinel:
        sentinels = ",".join(f"127.0.0.1:{port}" for port in ports.sentinel_ports)
        redis = f"redis+sentinel://{auth}{sentinels}/{servers.SENTINEL_SERVICE}/0"
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


def print_json(value: Any) -> None:
    """Pretty JSON on stdout, for --json output."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


# -- commands ------------------------------------------------------------------------------


async def cmd_router(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Run one router until SIGINT/SIGTERM."""
    from dataclasses import replace

    config = _router_logins(config, os.environ)
    if config.admin_amqp_url and config.admin_amqp_url != config.amqp_url:
        # The router's own login declares nothing: with the admin's at hand (local
        # servers), the topology is declared first, as `trust-broker setup` would.
        await cmd_setup(args, config)
    if args.prefetch:
        config = replace(config, prefetch=args.prefetch)
    port = args.metrics_port
    if port is None:
        port = int(os.environ.get("TRUST_METRICS_PORT", "9108"))
    config = replace(config, metrics_port=port)
    await run_router(config)
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
    from broker.provision import setup_vhost

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


async def cmd_keygen(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Create a key file and print its DID."""
    key = AgentKey.generate()
    save_key(Path(args.out), key, overwrite=args.force)
    if args.json:
        print_json({"did": key.did, "key_file": args.out})
    else:
        print(key.did)
    return 0


async def cmd_send(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Sign and publish one message."""
    from broker.client import AgentClient

    key = load_key(Path(args.key))
    public_key_from_did(args.to)
    payment = None
    if args.amount is not None:
        payment = PaymentIntent(currency=args.currency, amount=args.amount)
    body = orjson.loads(args.body)
    url = args.agent_url or os.environ.get("TRUST_AGENT_URL") or config.amqp_vhost_url
    async with AgentClient(key, url) as client:
        envelope = await client.send(
            args.to,
            body,
            kind=args.kind,
            payment=payment,
            data_classes=tuple(args.label),
            ttl_ms=None if args.ttl is None else int(args.ttl * 1000),
        )
    print(envelope.id)
    return 0


async def cmd_receive(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Print delivered messages with their trust headers."""
    from broker.client import AgentClient

    key = load_key(Path(args.key))
    url = args.agent_url or os.environ.get("TRUST_AGENT_URL") or config.amqp_vhost_url
    count = 0
    async with AgentClient(key, url) as client:
        async for received in client.messages(timeout=args.timeout):
            env, trust = received.envelope, received.trust
            row = {
                "id": env.id,
                "from": env.sender,
                "kind": env.kind,
                "body": env.body,
                "score": trust.score,
                "tier": trust.tier,
                "dimensions": trust.dimensions,
                "policy_version": trust.policy_version,
                "trace_id": trust.trace_id,
            }
            if args.json:
                print(orjson.dumps(row).decode())
            else:
                print(
                    f"{env.id}  from {env.sender[:24]}…  {env.kind}  score {trust.score}"
                    f"  tier {trust.tier}  body {orjson.dumps(env.body).decode()[:80]}"
                )
            count += 1
            if args.count and count >= args.count:
                break
    if count == 0 and not args.json:
        print("no messages", file=sys.stderr)
    return 0


async def cmd_peer(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Show a peer's current dimension scores and tier for an ordinary data message."""
    from broker.peerview import describe_peer

    public_key_from_did(args.did)
    store = open_store(config)
    try:
        view = await describe_peer(store, args.did, wall_clock_ms())
    finally:
        await store.close()
    if args.json:
        print_json(view)
        return 0
    print(f"peer      {args.did}")
    version = view["policy_version"]
    print(f"composite {view['composite']:.4f}  tier {view['tier']}  (policy v{version})")
    for name, score in view["dimensions"].items():
        bar = "#" * round(score * 20)
        print(f"  {name:<11} {score:5.3f} {bar:<20} {', '.join(view['reasons'][name])}")
    print(f"remediation: {view['remediation']}")
    return 0


async def cmd_provision(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Create an agent's AMQP user, queue and recipient profile."""
    from broker.provision import agent_amqp_url, provision_agent

    public_key_from_did(args.did)
    profile = RecipientProfile(
        did=args.did,
        retention=args.retention,
        accepted_kinds=frozenset(args.accept_kind) if args.accept_kind else None,
        accepted_data_classes=frozenset(args.accept_class) if args.accept_class else None,
        requires_pact=args.requires_pact,
    )
    store = open_store(config)
    try:
        creds = await provision_agent(config, store, profile)
    finally:
        await store.close()
    url = agent_amqp_url(config, creds)
    if args.password_file:
        path = Path(args.password_file)
        path.write_text(creds.password + "\n")
        path.chmod(0o600)
    if args.json:
        print_json({"did": args.did, "username": creds.username, "amqp_url": url})
    else:
        print(f"provisioned {args.did}")
        print(f"  AMQP user: {creds.username}")
        print(f"  AMQP URL:  {url}")
        print("  (the URL contains the password: give it to the agent, do not log it)")
    return 0


async def cmd_issuer(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Manage the issuer trust list."""
    store = open_store(config)
    try:
        if args.action == "add":
            public_key_from_did(args.did)
            await store.add_issuer(args.did)
        elif args.action == "remove":
            await store.remove_issuer(args.did)
        issuers = sorted((await store.globals(0)).issuers)
    finally:
        await store.close()
    if args.json:
        print_json({"issuers": issuers})
    else:
        print("\n".join(issuers) if issuers else "(no trusted issuers)")
    return 0


async def cmd_evidence(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Issue evidence with an issuer key, present (verify and record) it, or show a peer's."""
    now = wall_clock_ms()
    if args.action == "issue":
        document = _issue_evidence(args, now)
        text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
        if args.out:
            Path(args.out).write_text(text + "\n")
        print(text)
        return 0
    store = open_store(config)
    try:
        if args.action == "expect-code":
            public_key_from_did(args.subject)
            if not args.codebase_hash:
                raise ConfigError("evidence expect-code needs --subject and --codebase-hash")
            await store.set_expected_code(args.subject, args.codebase_hash)
            print(f"{args.subject} must attest codebase {args.codebase_hash}")
            return 0
        if args.action == "present":
            from broker.agreements import apply_document

            document = orjson.loads(Path(args.file).read_bytes())
            accepted = await apply_document(store, document, now)
            print(f"recorded {document.get('type')} {accepted}")
            return 0
        public_key_from_did(args.subject)
        from broker.peerview import describe_evidence

        view = await describe_evidence(store, args.subject, now)
    finally:
        await store.close()
    print_json(view)
    return 0


def _issue_evidence(args: argparse.Namespace, now: int) -> dict[str, Any]:
    if not args.issuer_key or not args.subject:
        raise ConfigError("evidence issue needs --issuer-key and --subject")
    issuer = load_key(Path(args.issuer_key))
    public_key_from_did(args.subject)
    common = {
        "id": f"{args.type}-{uuid.uuid4().hex}",
        "subject": args.subject,
        "issued_at": now,
        "expires_at": now + int(args.days * DAY_MS),
    }
    if args.type == "credential":
        return sign_evidence(issuer, "credential", organisation=args.organisation, **common)
    if args.type == "attestation":
        return sign_evidence(
            issuer, "attestation", codebase_hash=args.codebase_hash,
            config_hash=args.config_hash, **common,
        )  # fmt: skip
    amount = PaymentIntent(currency=args.currency, amount=args.amount or "0").minor_units
    return sign_evidence(issuer, "bond", amount_minor=amount, currency=args.currency, **common)


async def cmd_revoke(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Revoke a key or a piece of evidence; every router stops accepting it."""
    store = open_store(config)
    try:
        if args.what == "key":
            public_key_from_did(args.target)
            await store.revoke_key(args.target)
        else:
            await store.revoke_evidence(args.target)
    finally:
        await store.close()
    print(f"revoked {args.what} {args.target}")
    return 0


async def cmd_policy(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Show, change, version and what-if the routing policy."""
    from broker import policydiff

    store = open_store(config)
    try:
        current = await store.load_policy()
        if args.action == "show":
            print_json(current.model_dump(mode="json"))
            return 0
        if args.action == "history":
            _print_history(await store.policy_history(limit=args.limit), args.json)
            return 0
        proposed = await _proposed(args, current, store)
        changes = policydiff.diff(current, proposed)
        if args.action in ("diff", "what-if"):
            return await _preview(store, current, proposed, changes, args)
        if not changes:
            print("no change: the policy in force is identical", file=sys.stderr)
            return 0
        saved = await store.save_policy(proposed, who=_who(args), why=_required(args.why, "--why"))
    finally:
        await store.close()
    _print_changes(changes)
    print(f"policy version {saved.version} is in force on every router", file=sys.stderr)
    return 0


async def _proposed(args: argparse.Namespace, current: Any, store: Any) -> Any:
    """The policy an action proposes: an earlier version, one changed value, or a file."""
    from broker import policydiff
    from broker.policy import load_policy

    if args.action == "rollback":
        return await store.policy_version(int(_required(args.target, "VERSION")))
    if args.action == "set":
        path, value = _required(args.target, "PATH"), _required(args.value, "VALUE")
        return policydiff.set_value(current, path, value)
    if args.action == "what-if" and args.set_path:
        path, _, value = args.set_path.partition("=")
        return policydiff.set_value(current, path, _required(value, "--set PATH=VALUE"))
    data = orjson.loads(Path(_required(args.target, "FILE")).read_bytes())
    return load_policy({**data, "version": current.version})


def _required(value: str | None, name: str) -> str:
    if not value:
        raise ConfigError(f"{name} is required here")
    return value


def _who(args: argparse.Namespace) -> str:
    who = args.who or os.environ.get("USER") or os.environ.get("LOGNAME")
    return _required(who, "--who")


def _print_changes(changes: list[tuple[str, Any, Any]]) -> None:
    for path, old, new in changes:
        print(f"  {path}: {old!r} -> {new!r}")


def _print_history(history: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(history)
        return
    for entry in history:
        print(f"v{entry['version']:<4} {entry['at_ms']}  {entry['who']:<12} {entry['why']}")


async def _preview(
    store: Any, current: Any, proposed: Any, changes: list[tuple[str, Any, Any]],
    args: argparse.Namespace,
) -> int:  # fmt: skip
    from broker.whatif import replay

    if args.action == "diff":
        _print_changes(changes) if changes else print("no difference")
        return 0
    entries = await store.recent_decisions(
        limit=args.last, since_ms=args.since_ms, until_ms=args.until_ms
    )
    result = replay(entries, current, proposed).to_dict()
    if args.json:
        print_json({**result, "policy_changes": [list(c) for c in changes]})
        return 0
    _print_changes(changes)
    print(f"replayed {result['replayed']} decisions: {result['unchanged']} unchanged, "
          f"{result['newly_blocked']} newly blocked, {result['newly_delivered']} newly "
          f"delivered, {result['newly_escalated']} newly escalated")  # fmt: skip
    for sender, actions in result["by_sender"].items():
        print(f"  {sender}: {actions}")
    for reason, actions in result["by_reason"].items():
        print(f"  reason {reason}: {actions}")
    if result["changed_scoring"]:
        sections = ", ".join(result["changed_scoring"])
        print(
            f"note: scoring constants changed ({sections}); the logged dimension scores "
            "predate them, so replay live to see their effect"
        )
    return 0


async def cmd_trace(args: argparse.Namespace, config: BrokerConfig) -> int:
    """The full story of one message: received, gates, dimensions, action, commit, reports."""
    from broker.recorder import check_trace_id

    store = open_store(config)
    try:
        trace_id = args.id
        if not re.fullmatch(r"[0-9a-f]{32}", trace_id):
            trace_id = await store.trace_id_of(trace_id) or trace_id
        record = await store.trace(check_trace_id(trace_id))
    finally:
        await store.close()
    if record is None:
        hours = config.trace_ttl_ms / 3_600_000
        raise ConfigError(
            f"no trace {trace_id} (traces are kept for {hours:g} h: TRUST_TRACE_TTL_HOURS)"
        )
    print_json(record)
    return 0


async def cmd_servers(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Start, stop or report the local RabbitMQ and Redis."""
    cfg = server_config(os.environ)

    def progress(text: str) -> None:
        print(f"[servers] {text}", file=sys.stderr)

    if args.action == "start":
        await asyncio.to_thread(servers.ensure_installed, progress)
        await asyncio.to_thread(servers.start, cfg, progress)
    elif args.action == "stop":
        await asyncio.to_thread(servers.stop, cfg, progress)
    status = servers.status(cfg)
    if args.json or args.action == "status":
        print_json(status)
    return 0


async def cmd_demo(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Run the scripted scenario against real servers and print the decisions."""
    from broker.demo import run_demo

    if not args.no_start_servers:
        await cmd_servers(argparse.Namespace(action="start", json=False), config)
    return await run_demo(config, keep_running=args.keep_running)


async def cmd_decode(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Validate an envelope file and explain what is wrong with it, if anything."""
    from broker.envelope import signature_valid

    decoded = decode_envelope(Path(args.file).read_bytes())
    ok = signature_valid(decoded)
    print(f"valid envelope {decoded.envelope.id} from {decoded.envelope.sender}")
    print(f"signature: {'valid' if ok else 'INVALID'}")
    return 0 if ok else 1


# -- parser --------------------------------------------------------------------------------

DESCRIPTION = """\
Message-layer trust broker for AI agents. Every inter-agent message is scored on five
weighted dimensions (identity, reputation, compliance, behavioral, stake) before it can
reach an agent's queue, and is delivered, blocked or escalated.

Connection settings come from flags, then TRUST_AMQP_URL, TRUST_REDIS_URL,
TRUST_MANAGEMENT_URL, TRUST_VHOST, TRUST_KEY_PREFIX; local server ports from
TRUST_AMQP_PORT, TRUST_REDIS_PORT, TRUST_MANAGEMENT_PORT, TRUST_DIST_PORT, TRUST_RUN_DIR."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="trust-broker",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_core_commands(sub)
    _add_ops_commands(sub)
    from broker.cli_review import add_review_commands

    add_review_commands(sub, default_reviewer=os.environ.get("USER") or os.environ.get("LOGNAME"))
    from broker.console.cli import add_console_commands

    add_console_commands(sub)
    return parser


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


def _add_core_commands(sub: Any) -> None:
    p = sub.add_parser(
        "router",
        help="run a router (consume ingress, decide, route)",
        description="Run one router until SIGINT/SIGTERM. Start several for "
        "more throughput: they compete for the same ingress queue.",
    )
    p.add_argument("--prefetch", type=int, help="unacked messages in flight (default 512)")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics on 127.0.0.1:PORT (env TRUST_METRICS_PORT; default 9108; "
        "0 turns it off)",
    )
    p.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default=None,
        help="event loop (env TRUST_EVENT_LOOP; default asyncio; auto: uvloop when "
        "installed; uvloop needs pip install 'trust-broker[uvloop]')",
    )
    p.set_defaults(handler=cmd_router)

    p = sub.add_parser(
        "setup",
        help="declare the topology and grant the service accounts (admin login)",
        description="With the admin login (TRUST_AMQP_URL / TRUST_MANAGEMENT_URL, or the "
        "local run directory's credentials.json): create the vhost, give the router and "
        "negotiator accounts their permissions and declare every exchange and queue. "
        "Routers declare nothing themselves. Example: trust-broker --vhost prod setup",
    )
    p.set_defaults(handler=cmd_setup)

    p = sub.add_parser(
        "keygen",
        help="create an agent key file and print its DID",
        description="Create a new Ed25519 key, write it to a 0600 file, "
        "print its did:key. The private key is never printed.",
    )
    p.add_argument("--out", required=True, help="key file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    _json_flag(p)
    p.set_defaults(handler=cmd_keygen)

    p = sub.add_parser(
        "send",
        help="sign and publish one message",
        description="Sign an envelope with --key and publish it to the "
        "ingress exchange. Prints the message id.",
    )
    p.add_argument("--key", required=True, help="sender key file (from keygen)")
    p.add_argument("--to", required=True, help="recipient DID")
    p.add_argument("--kind", default="data", choices=sorted(MESSAGE_KINDS))
    p.add_argument("--body", default="{}", help="JSON body (default {})")
    p.add_argument("--amount", help="payment amount as a decimal string, e.g. 12.50")
    p.add_argument("--currency", default="USD", help="ISO 4217 currency (default USD)")
    p.add_argument("--label", action="append", default=[], help="data class label, repeatable")
    p.add_argument("--ttl", type=float, help="seconds until the message expires")
    p.add_argument("--agent-url", help="the agent's own AMQP URL (from provision)")
    p.set_defaults(handler=cmd_send)

    p = sub.add_parser(
        "receive",
        help="print messages delivered to an agent",
        description="Consume the agent's queue and print each message with "
        "its trust score, tier and dimensions.",
    )
    p.add_argument("--key", required=True, help="recipient key file")
    p.add_argument("--count", type=int, default=0, help="stop after N messages (0 = no limit)")
    p.add_argument("--timeout", type=float, default=5.0, help="stop after S idle seconds")
    p.add_argument("--agent-url", help="the agent's own AMQP URL (from provision)")
    _json_flag(p)
    p.set_defaults(handler=cmd_receive)

    p = sub.add_parser(
        "peer",
        help="show a peer's dimension scores and tier",
        description="Score an ordinary data message from DID with the "
        "current policy and show each dimension with its reasons.",
    )
    p.add_argument("did")
    _json_flag(p)
    p.set_defaults(handler=cmd_peer)

    p = sub.add_parser("decode", help="validate an envelope file and check its signature")
    p.add_argument("file")
    p.set_defaults(handler=cmd_decode)


def _add_ops_commands(sub: Any) -> None:
    p = sub.add_parser(
        "provision",
        help="create an agent's AMQP user, queue and profile",
        description="Create AMQP user DID that may publish only to the ingress "
        "exchange and read only agent.DID, declare that queue, and register "
        "DID as a recipient with its retention policy.",
    )
    p.add_argument("did")
    p.add_argument(
        "--retention",
        default="ephemeral",
        choices=["ephemeral", "temporary", "permanent"],
        help="how long the agent keeps what it receives (drives the privacy gate)",
    )
    p.add_argument("--accept-kind", action="append", help="message kind it accepts (repeatable)")
    p.add_argument("--accept-class", action="append", help="data class it accepts (repeatable)")
    p.add_argument("--requires-pact", action="store_true", help="only accept messages under a pact")
    p.add_argument("--password-file", help="also write the AMQP password to this 0600 file")
    _json_flag(p)
    p.set_defaults(handler=cmd_provision)

    p = sub.add_parser("issuer", help="manage the issuer trust list")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("did", nargs="?", default="")
    _json_flag(p)
    p.set_defaults(handler=cmd_issuer)

    p = sub.add_parser(
        "evidence",
        help="issue, present or show identity credentials, attestations and bonds",
        description="issue TYPE: sign a credential (binds --subject to --organisation), a "
        "code attestation (--codebase-hash, --config-hash) or a stake bond (--amount, "
        "--currency) with an issuer key. present: verify a signed document (evidence, "
        "manifest, pact, vouch, slash or key rotation) and record it. show: a peer's "
        "recorded evidence. expect-code: the codebase hash --subject must attest (an "
        "attestation of another hash is reported as attestation_mismatch).",
    )
    p.add_argument("action", choices=["issue", "present", "show"])
    p.add_argument(
        "type",
        nargs="?",
        default="credential",
        choices=["credential", "attestation", "bond"],
        help="what to issue",
    )
    p.add_argument("--issuer-key", help="issuer key file (issue)")
    p.add_argument("--subject", help="agent DID the evidence is about (issue, show)")
    p.add_argument("--organisation", default="", help="organisation (credential)")
    p.add_argument("--codebase-hash", default="", help="e.g. sha256:... (attestation)")
    p.add_argument("--config-hash", default="", help="e.g. sha256:... (attestation)")
    p.add_argument("--amount", help="bond amount as a decimal string (bond)")
    p.add_argument("--currency", default="USD", help="bond currency (bond)")
    p.add_argument("--days", type=float, default=30.0, help="validity in days (issue)")
    p.add_argument("--out", help="also write the document here (issue)")
    p.add_argument("--file", help="signed document to verify and record (present)")
    p.set_defaults(handler=cmd_evidence)

    p = sub.add_parser("revoke", help="revoke a key or a credential/attestation")
    p.add_argument("what", choices=["key", "evidence"])
    p.add_argument("target", help="DID (key) or evidence id")
    p.set_defaults(handler=cmd_revoke)

    p = sub.add_parser(
        "policy",
        help="show, change, version, roll back or what-if the routing policy",
        description="show: the policy in force. diff FILE: what FILE would change. set "
        "PATH VALUE (e.g. thresholds.probation 0.55) and load FILE: validate and put in "
        "force on every router within a second, as a new version recording --who and "
        "--why. history: every version with who, when, why. rollback VERSION: a new "
        "version equal to an earlier one. what-if FILE (or --set PATH=VALUE): replay the "
        "last --last decisions (or a --since-ms/--until-ms range) under the proposal and "
        "report what would change, by sender and reason, without applying it. A bad "
        "policy is refused with the reason, never repaired.",
    )
    p.add_argument(
        "action", choices=["show", "diff", "set", "load", "history", "rollback", "what-if"]
    )
    p.add_argument(
        "target", nargs="?", help="FILE (diff, load, what-if), PATH (set), VERSION (rollback)"
    )
    p.add_argument("value", nargs="?", help="VALUE for set (JSON; e.g. 0.55)")
    p.add_argument("--set", dest="set_path", help="what-if a single change: PATH=VALUE")
    p.add_argument("--why", help="reason for the change (required for set, load, rollback)")
    p.add_argument("--who", help="who makes the change (default $USER)")
    p.add_argument("--last", type=int, default=1000, help="what-if: replay the last N decisions")
    p.add_argument("--since-ms", type=int, help="what-if: decisions from this Unix ms on")
    p.add_argument("--until-ms", type=int, help="what-if: decisions up to this Unix ms")
    p.add_argument("--limit", type=int, default=50, help="history: versions to show")
    _json_flag(p)
    p.set_defaults(handler=cmd_policy)

    p = sub.add_parser(
        "trace",
        help="the full story of one message (flight recorder)",
        description="Show the recorded decision for a trace id (x-trust-trace-id) or a "
        "message id: metadata, gates, dimensions, action, commit time, and later events "
        "(reports, releases, approvals). Content is kept only as the pact's monitoring "
        "terms allow (full, metadata only, or hashes).",
    )
    p.add_argument("id", help="trace id (32 hex) or message id")
    p.set_defaults(handler=cmd_trace)

    p = sub.add_parser(
        "servers",
        help="start/stop/status of local RabbitMQ and Redis",
        description="Run RabbitMQ and Redis from Debian's packages as the "
        "project's own processes (data and logs under TRUST_RUN_DIR, default "
        ".run/). Installs them with apt-get when missing and run as root.",
    )
    p.add_argument("action", choices=["start", "stop", "status"])
    _json_flag(p)
    p.set_defaults(handler=cmd_servers)

    p = sub.add_parser(
        "demo",
        help="scripted scenario: deliver, probation, block, escalate",
        description="Start the local servers (unless --no-start-servers), a "
        "router and demo agents, play a scripted scenario and print a table "
        "of the decisions.",
    )
    p.add_argument("--no-start-servers", action="store_true")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the router and agents running after the scenario",
    )
    p.set_defaults(handler=cmd_demo)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the trust-broker console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    handler: Handler = args.handler
    try:
        config = broker_config(os.environ, args)
        with asyncio.Runner(loop_factory=event_loop_factory(args, os.environ)) as runner:
            return runner.run(handler(args, config))
    except KeyboardInterrupt:
        return 130
    except (TrustBrokerError, servers.ServersError, ValueError, OSError) as exc:
        print(f"trust-broker {args.command}: error: {exc}", file=sys.stderr)
        return 1
