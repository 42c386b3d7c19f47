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

Users and permissions go through the RabbitMQ management HTTP API (broker/amqp/management.py).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from broker.amqp.failover import connect_any
from broker.amqp.management import ManagementAPI
from broker.amqp.topology import LANE_MAX_LENGTH, declare_agent_queue
from broker.config import BrokerConfig, Topology, split_urls, with_vhost
from broker.core.state import RecipientProfile
from broker.errors import ConfigError
from broker.store.redis import RedisStore


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
    from broker.amqp.topology import declare_router_topology

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
