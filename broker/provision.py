"""Accounts and provisioning: every AMQP login and what RabbitMQ lets it do.

Each account's permission regexes come from one function here (`*_permissions`), so
they can be extended in one place; docs/SECURITY.md ("Accounts") lists them all:
- admin: everything on the vhosts it manages (setup, provisioning, management API);
- router: read the ingress queue and every agent's lane (trust.lane.<DID>), write only
  trust.deliver, trust.blocked and trust.escalations; it declares nothing (the admin
  declares the topology);
- negotiator: the router process's second login, for handshake replies only: read
  trust.handshake, write amq.default (RabbitMQ's direct reply-to goes through it);
- agents: write their own lane exchange (trust.in.<DID>) and the handshake exchange,
  read their own queue.

Uses the RabbitMQ management HTTP API (standard library only, run in a thread).
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson

from broker.config import BrokerConfig, Topology, mask_url, split_urls, with_vhost
from broker.errors import ConfigError
from broker.failover import connect_any
from broker.state import RecipientProfile
from broker.store.redis import RedisStore
from broker.topology import LANE_MAX_LENGTH, declare_agent_queue


@dataclass(frozen=True)
class AgentCredentials:
    """The AMQP login of a provisioned agent; the password never appears in repr."""

    username: str
    password: str = field(repr=False)


def _only(*names: str) -> str:
    return "^(" + "|".join(re.escape(name) for name in names) + ")$"


def admin_permissions(topology: Topology) -> dict[str, str]:
    """The admin declares, provisions and reviews: everything on its vhosts."""
    return {"configure": ".*", "write": ".*", "read": ".*"}


def router_permissions(topology: Topology) -> dict[str, str]:
    """Consume ingress; publish outcomes only to the three places an outcome may go.
    Configure nothing but its own session leases (the admin declares the topology) and
    no default exchange, so not even a bug can put a message in an agent's queue except
    through trust.deliver."""
    read = (topology.ingress_queue, topology.escalations_queue)
    return {
        # Only its sessions' leases: exclusive queues that die with their connection.
        "configure": f"^{re.escape(topology.session_queue_prefix)}[0-9a-f]+$",
        "write": _only(
            topology.deliver_exchange, topology.blocked_exchange, topology.escalations_exchange
        ),
        # The escalation queue too: the expiry sweeper runs in the routers. Lanes by
        # prefix: agents provisioned later are read without granting anything again.
        "read": "^("
        + "|".join(re.escape(name) for name in read)
        + f"|{re.escape(topology.lane_queue_prefix)}did:.+)$",
    }


def negotiator_permissions(topology: Topology) -> dict[str, str]:
    """Answer handshake requests: read trust.handshake, write amq.default, through which
    RabbitMQ routes direct reply-to (it has no narrower permission for it)."""
    return {"configure": "^$", "write": "^amq\\.default$", "read": _only(topology.handshake_queue)}


def agent_permissions(topology: Topology, did: str) -> dict[str, str]:
    """RabbitMQ permission regexes: configure nothing; write only the agent's own lane and
    the handshake exchange (not the shared trust.ingress, not another agent's lane); read
    only the agent's own queue."""
    return {
        "configure": "^$",
        "write": _only(topology.lane_exchange(did), topology.handshake_exchange),
        "read": f"^{re.escape(topology.agent_queue(did))}$",
    }


# A proxy in the environment must never see the admin's credentials or loopback calls.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _node(url: str) -> tuple[str, str]:
    """(base URL, Authorization header) of one management node URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"management URL must be http(s)://user:pass@host:port/: {url!r}")
    if not parts.username:
        raise ConfigError(
            f"management URL {mask_url(url)} has no credentials: the servers create no "
            "guest; use the admin login from the run directory's credentials.json"
        )
    login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    auth = "Basic " + base64.b64encode(login.encode()).decode()
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}", auth


class ManagementAPI:
    """A minimal client for the RabbitMQ management HTTP API, over one or more nodes."""

    def __init__(self, url: str) -> None:
        self._nodes = [_node(one) for one in split_urls(url)]
        self._display = mask_url(url)
        self._turn = 0

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request to the first node that answers (failing over to the next);
        raise ConfigError with the server's answer on a refusal or when none answers."""
        data = None if body is None else orjson.dumps(body)
        failures: list[str] = []
        for _ in range(len(self._nodes)):
            base, auth = self._nodes[self._turn % len(self._nodes)]
            req = urllib.request.Request(base + path, data=data, method=method)
            req.add_header("Authorization", auth)
            req.add_header("Content-Type", "application/json")
            try:
                with _NO_PROXY.open(req, timeout=10) as response:
                    payload = response.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:200]
                raise ConfigError(
                    f"{method} {path} refused by RabbitMQ ({exc.code}): {detail}"
                ) from None
            except (urllib.error.URLError, OSError) as exc:
                failures.append(f"{base}: {exc}")
                self._turn += 1
                continue
            return orjson.loads(payload) if payload else None
        raise ConfigError(
            f"cannot reach the RabbitMQ management API at {self._display}: "
            f"{'; '.join(failures)}; is the server running (`trust-broker servers start`)?"
        )

    def put_vhost(self, vhost: str) -> None:
        """Create a virtual host (idempotent)."""
        self.request("PUT", f"/api/vhosts/{quote(vhost, safe='')}", {})

    def delete_vhost(self, vhost: str) -> None:
        """Delete a virtual host and everything in it."""
        self.request("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")

    def put_user(self, username: str, password: str, tags: str = "") -> None:
        """Create or update a user."""
        path = f"/api/users/{quote(username, safe='')}"
        self.request("PUT", path, {"password": password, "tags": tags})

    def set_permissions(self, vhost: str, username: str, perms: dict[str, str]) -> None:
        """Set a user's configure/write/read regexes on a vhost."""
        path = f"/api/permissions/{quote(vhost, safe='')}/{quote(username, safe='')}"
        self.request("PUT", path, perms)

    def delete_user(self, username: str) -> None:
        """Delete a user."""
        self.request("DELETE", f"/api/users/{quote(username, safe='')}")

    def put_policy(self, vhost: str, name: str, pattern: str, definition: dict[str, Any]) -> None:
        """Create or replace a policy on a vhost (applies to queues matching `pattern`)."""
        path = f"/api/policies/{quote(vhost, safe='')}/{quote(name, safe='')}"
        self.request(
            "PUT", path, {"pattern": pattern, "definition": definition, "apply-to": "queues"}
        )


async def grant_service_accounts(
    api: ManagementAPI, vhost: str, topology: Topology, accounts: dict[str, str]
) -> None:
    """Give the service accounts named in `accounts` (role -> username: admin, router,
    negotiator) their permissions on `vhost`."""
    grants = {
        "admin": admin_permissions(topology),
        "router": router_permissions(topology),
        "negotiator": negotiator_permissions(topology),
    }
    for role, username in accounts.items():
        await asyncio.to_thread(api.set_permissions, vhost, username, grants[role])


async def setup_vhost(config: BrokerConfig, accounts: dict[str, str] | None = None) -> None:
    """Create the vhost, grant the service accounts and declare the whole topology as the
    admin (`config.admin_url`): the router and agents declare nothing themselves."""
    from broker.topology import declare_router_topology

    api = ManagementAPI(config.management_url)
    await asyncio.to_thread(api.put_vhost, config.vhost)
    await grant_service_accounts(api, config.vhost, config.topology, accounts or {})
    await asyncio.to_thread(_replace_classic_handshake_queue, api, config)
    urls = [with_vhost(url, config.vhost) for url in split_urls(config.admin_url)]
    connection = await connect_any(urls, timeout=config.amqp_timeout_ms / 1000)
    async with connection:
        await declare_router_topology(await connection.channel(), config.topology)


async def provision_agent(
    config: BrokerConfig,
    store: RedisStore,
    profile: RecipientProfile,
    *,
    password: str | None = None,
    lane_length: int = LANE_MAX_LENGTH,
) -> AgentCredentials:
    """Create the agent's AMQP user, queue and ingress lane, register it as a recipient
    and announce the lane to the routers (which consume it within a second)."""
    api = ManagementAPI(config.management_url)
    secret = password or secrets.token_urlsafe(24)
    perms = agent_permissions(config.topology, profile.did)
    await asyncio.to_thread(api.put_user, profile.did, secret)
    await asyncio.to_thread(api.set_permissions, config.vhost, profile.did, perms)
    urls = [with_vhost(url, config.vhost) for url in split_urls(config.admin_url)]
    connection = await connect_any(urls, timeout=config.amqp_timeout_ms / 1000)
    async with connection:
        channel = await connection.channel()
        await declare_agent_queue(channel, config.topology, profile.did, lane_length=lane_length)
    await store.register_recipient(profile)
    await store.add_lane(profile.did)
    return AgentCredentials(profile.did, secret)


def _replace_classic_handshake_queue(api: ManagementAPI, config: BrokerConfig) -> None:
    """Vhosts set up before trust.handshake became a quorum queue have a classic one,
    which a redeclaration refuses (PRECONDITION_FAILED). It only ever holds handshake
    requests younger than a minute, which agents retry: delete it, setup redeclares it."""
    queue = quote(config.topology.handshake_queue, safe="")
    path = f"/api/queues/{quote(config.vhost, safe='')}/{queue}"
    try:
        info = api.request("GET", path)
    except ConfigError:
        return  # absent (404): nothing to replace
    if isinstance(info, dict) and info.get("type") == "classic":
        api.request("DELETE", path)


def agent_amqp_url(config: BrokerConfig, credentials: AgentCredentials) -> str:
    """The router's AMQP URL(s) with the agent's login instead (every cluster node)."""
    return ",".join(
        with_login(url, credentials.username, credentials.password, config.vhost)
        for url in split_urls(config.amqp_url)
    )


def with_login(url: str, username: str, password: str, vhost: str | None = None) -> str:
    """`url` with this login (and vhost, if given) instead of its own."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    login = f"{quote(username, safe='')}:{quote(password, safe='')}"
    rebuilt = f"{parts.scheme}://{login}@{host}{port}{parts.path or '/'}"
    return rebuilt if vhost is None else with_vhost(rebuilt, vhost)
