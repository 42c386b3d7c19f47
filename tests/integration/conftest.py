"""Integration fixtures: the real RabbitMQ and Redis started by the project's own scripts.

Each test gets its own RabbitMQ vhost and Redis key prefix, so tests never see each
other's queues or state, and a fresh router running in-process on them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from broker import servers
from broker.app import open_store
from broker.cli import broker_config, server_config
from broker.client import AgentClient, Received
from broker.config import BrokerConfig
from broker.identity import AgentKey
from broker.provision import ManagementAPI, agent_amqp_url, provision_agent
from broker.router import Router
from broker.state import RecipientProfile
from broker.store.redis import RedisStore

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs the servers."""
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def server_cfg() -> Iterator[servers.ServerConfig]:
    """The suite's servers (scripts/test starts them; started here if they are not up)."""
    env = {"TRUST_RUN_DIR": str(REPO / ".run"), **os.environ}
    cfg = server_config(env)
    servers.ensure_installed(print)
    servers.start(cfg, print)
    yield cfg


@pytest.fixture(scope="session")
def base_config(server_cfg: servers.ServerConfig) -> BrokerConfig:
    """Connection settings for the suite's servers."""

    class Args:
        amqp_url = redis_url = management_url = vhost = key_prefix = None

    env = {
        **os.environ,
        "TRUST_AMQP_PORT": str(server_cfg.amqp_port),
        "TRUST_REDIS_PORT": str(server_cfg.redis_port),
        "TRUST_MANAGEMENT_PORT": str(server_cfg.management_port),
    }
    return broker_config(env, Args())  # type: ignore[arg-type]


@pytest.fixture
async def config(base_config: BrokerConfig) -> AsyncIterator[BrokerConfig]:
    """A private vhost and Redis key prefix for one test; removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    api = ManagementAPI(base_config.management_url)
    await asyncio.to_thread(api.put_vhost, name)
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    await asyncio.to_thread(api.set_permissions, name, "guest", everything)
    config = replace(base_config, vhost=name, key_prefix=f"{name}:", cache_ttl_ms=500)
    yield config
    await asyncio.to_thread(api.delete_vhost, name)
    store = open_store(config)
    try:
        await store.purge()
    finally:
        await store.close()


@pytest.fixture
async def store(config: BrokerConfig) -> AsyncIterator[RedisStore]:
    """The Redis store under the test's prefix."""
    store = open_store(config)
    yield store
    await store.close()


@pytest.fixture(scope="session")
def broker_key() -> AgentKey:
    """The broker's own did:key for the whole session."""
    return AgentKey.generate()


@pytest.fixture
async def router(config: BrokerConfig, broker_key: AgentKey) -> AsyncIterator[Router]:
    """A router running in-process on the test's vhost (its own store connection)."""
    own_store = open_store(config)
    router = Router(config, own_store, broker_key=broker_key)
    await router.start()
    yield router
    await router.stop()
    await own_store.close()


@dataclass
class Agent:
    """A provisioned agent connected with its own, least-privilege AMQP login."""

    key: AgentKey
    client: AgentClient
    amqp_url: str

    @property
    def did(self) -> str:
        return self.key.did

    async def send(self, recipient: Agent | str, body: Any = None, **options: Any) -> Any:
        to = recipient if isinstance(recipient, str) else recipient.did
        return await self.client.send(to, body if body is not None else {"n": 1}, **options)

    async def receive_all(self, timeout: float = 1.5) -> list[Received]:
        return [received async for received in self.client.messages(timeout=timeout)]


AgentFactory = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def agents(config: BrokerConfig, store: RedisStore) -> AsyncIterator[AgentFactory]:
    """Factory: provision an agent (recipient profile options as keywords) and connect it."""
    made: list[Agent] = []

    async def make(**profile: Any) -> Agent:
        key = AgentKey.generate()
        creds = await provision_agent(config, store, RecipientProfile(did=key.did, **profile))
        url = agent_amqp_url(config, creds)
        client = await AgentClient(key, url).connect()
        agent = Agent(key, client, url)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        await agent.client.close()
