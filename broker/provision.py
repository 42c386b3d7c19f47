"""Provisioning agents: an AMQP user that can only publish to ingress and read its queue.

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
from urllib.parse import quote, urlsplit

import aio_pika
import orjson

from broker.config import BrokerConfig, Topology, mask_url, with_vhost
from broker.errors import ConfigError
from broker.state import RecipientProfile
from broker.store.redis import RedisStore
from broker.topology import declare_agent_queue


@dataclass(frozen=True)
class AgentCredentials:
    """The AMQP login of a provisioned agent; the password never appears in repr."""

    username: str
    password: str = field(repr=False)


def agent_permissions(topology: Topology, did: str) -> dict[str, str]:
    """RabbitMQ permission regexes: configure nothing; write only the ingress and handshake
    exchanges; read only the agent's own queue."""
    return {
        "configure": "^$",
        "write": (
            f"^({re.escape(topology.ingress_exchange)}|{re.escape(topology.handshake_exchange)})$"
        ),
        "read": f"^{re.escape(topology.agent_queue(did))}$",
    }


class ManagementAPI:
    """A minimal client for the RabbitMQ management HTTP API."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"management URL must be http(s)://user:pass@host:port/: {url!r}")
        self._base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        login = f"{parts.username or 'guest'}:{parts.password or 'guest'}"
        self._auth = "Basic " + base64.b64encode(login.encode()).decode()
        self._display = mask_url(url)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request; raise ConfigError with the server's answer on failure."""
        data = None if body is None else orjson.dumps(body)
        req = urllib.request.Request(self._base + path, data=data, method=method)
        req.add_header("Authorization", self._auth)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise ConfigError(
                f"{method} {path} refused by RabbitMQ ({exc.code}): {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConfigError(
                f"cannot reach the RabbitMQ management API at {self._display}: {exc}; "
                "is the server running (`trust-broker servers start`)?"
            ) from None
        return orjson.loads(payload) if payload else None

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


async def provision_agent(
    config: BrokerConfig,
    store: RedisStore,
    profile: RecipientProfile,
    *,
    password: str | None = None,
) -> AgentCredentials:
    """Create the agent's AMQP user and queue and register it as a recipient."""
    api = ManagementAPI(config.management_url)
    secret = password or secrets.token_urlsafe(24)
    perms = agent_permissions(config.topology, profile.did)
    await asyncio.to_thread(api.put_user, profile.did, secret)
    await asyncio.to_thread(api.set_permissions, config.vhost, profile.did, perms)
    connection = await aio_pika.connect(config.amqp_vhost_url)
    async with connection:
        channel = await connection.channel()
        await declare_agent_queue(channel, config.topology, profile.did)
    await store.register_recipient(profile)
    return AgentCredentials(profile.did, secret)


def agent_amqp_url(config: BrokerConfig, credentials: AgentCredentials) -> str:
    """The router's AMQP URL with the agent's login instead."""
    parts = urlsplit(config.amqp_url)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    user = quote(credentials.username, safe="")
    secret = quote(credentials.password, safe="")
    return with_vhost(f"{parts.scheme}://{user}:{secret}@{host}{port}/", config.vhost)
