"""Portable trust between two brokers on the same real servers (issue 15).

Broker A and broker B each have their own RabbitMQ vhost, Redis database and key prefix
and broker key. An agent with a long clean record at A asks A for a trust credential
(over AMQP, `export`) and presents it, with A's status list, to B: it starts at B above
the cold-start prior, no higher than B's federation ceiling. A fresh key starts at the
default; a credential from an issuer not on B's federation list, a tampered one, an
expired one and a revoked one change nothing, each refused with its reason.
"""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from broker.amqp.management import ManagementAPI
from broker.app import open_store
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.identity import AgentKey
from broker.core.state import IssuerRole, PeerState, RecipientProfile
from broker.core.statuslist import revoked_in
from broker.federation.export import current_status_list, export_record, revoke_issued
from broker.federation.record import record_subject, status_list_credential, trust_record
from broker.federation.vc import issue_credential
from broker.ops.provision import agent_amqp_url, provision_agent, setup_vhost
from broker.ops.sweeper import run_sweeper
from broker.peerview import describe_evidence, describe_peer
from broker.router import Router
from broker.router.negotiation import NegotiationService
from broker.sdk.client import AgentClient
from broker.sdk.keyfile import save_key
from broker.store.redis import RedisStore
from tests.integration.conftest import router_view
from tests.integration.test_cli_flow import as_json, cli_env

DAY_MS = 86_400_000
PRIOR = 0.25
FRESH_COMPOSITE = 0.2975


@dataclass
class Broker:
    """One deployment: its config (vhost, Redis database, prefix), store, key, router."""

    config: BrokerConfig
    store: RedisStore
    key: AgentKey
    router: Router
    clients: list[AgentClient]

    async def agent(self, key: AgentKey) -> AgentClient:
        """Provision `key` here and connect it with its own login."""
        creds = await provision_agent(self.config, self.store, RecipientProfile(did=key.did))
        client = await AgentClient(key, agent_amqp_url(self.config, creds)).connect()
        self.clients.append(client)
        return client

    async def reputation(self, did: str) -> tuple[float, list[str], float]:
        view = await describe_peer(self.store, did, wall_clock_ms())
        dims = view["dimensions"]
        return dims["reputation"], view["reasons"]["reputation"], view["composite"]


async def _broker(base: BrokerConfig, logins: dict[str, str], db: int) -> AsyncIterator[Broker]:
    name = f"test-fed-{uuid.uuid4().hex[:10]}"
    redis_url = base.redis_url.rpartition("/")[0] + f"/{db}"
    config = replace(base, vhost=name, key_prefix=f"{name}:", cache_ttl_ms=200, redis_url=redis_url)
    accounts = {k.partition(":")[2]: v for k, v in logins.items() if k.startswith("user:")}
    await setup_vhost(config, accounts)
    store, router_store, key = open_store(config), open_store(config), AgentKey.generate()
    router = Router(router_view(config, logins), router_store, broker_key=key, sweeper=run_sweeper)
    await router.start()
    broker = Broker(config, store, key, router, [])
    try:
        yield broker
    finally:
        for client in broker.clients:
            await client.close()
        await router.stop()
        await router_store.close()
        await store.purge()
        await store.close()
        await asyncio.to_thread(ManagementAPI(base.management_url).delete_vhost, name)


@pytest.fixture
async def broker_a(
    base_config: BrokerConfig, service_logins: dict[str, str]
) -> AsyncIterator[Broker]:
    async for broker in _broker(base_config, service_logins, 0):
        yield broker


@pytest.fixture
async def broker_b(
    base_config: BrokerConfig, service_logins: dict[str, str], broker_a: Broker
) -> AsyncIterator[Broker]:
    async for broker in _broker(base_config, service_logins, 1):
        await broker.store.add_issuer(broker_a.key.did, {IssuerRole.FEDERATION}, trust=1.0)
        yield broker


async def _veteran(a: Broker, outcomes: int = 60) -> tuple[AgentKey, AgentClient]:
    """An agent A knows well: it proved its key and has `outcomes` verified successes."""
    key = AgentKey.generate()
    client = await a.agent(key)
    await client.handshake(expected_broker=a.key.did)
    policy = await a.store.load_policy()
    for _ in range(outcomes):
        await a.store.add_outcome(
            key.did, success=True, weight=1.0, now_ms=wall_clock_ms(), policy=policy
        )
    return key, client


async def cli(
    config: BrokerConfig, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run trust-broker against one broker's vhost, Redis database and prefix."""
    cmd = [sys.executable, "-m", "broker", "--log-level", "WARNING", *args]
    done = await asyncio.to_thread(
        subprocess.run, cmd, env={**cli_env(config), **(env or {})}, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def _codes(reply: dict[str, Any]) -> list[str]:
    return [item["code"] for item in reply["refused"]]


async def test_clean_record_at_a_starts_above_the_prior_at_b(
    broker_a: Broker, broker_b: Broker
) -> None:
    key, at_a = await _veteran(broker_a)
    exported = await at_a.export_trust()
    credential, status = exported["credential"], exported["status_list"]
    assert credential["issuer"] == broker_a.key.did
    assert credential["proof"]["cryptosuite"] == "eddsa-jcs-2022"
    assert credential["credentialSubject"]["successes"] == pytest.approx(60, abs=0.01)
    assert credential["credentialSubject"]["failures"] == 0

    fresh = AgentKey.generate()
    await broker_b.agent(fresh)
    score, reasons, total = await broker_b.reputation(fresh.did)
    assert (score, reasons) == (PRIOR, ["reputation_cold_start"])
    assert total == pytest.approx(FRESH_COMPOSITE, abs=1e-4)

    at_b = await broker_b.agent(key)
    reply = await at_b.present(status, credential)
    assert reply["refused"] == [] and reply["accepted"] == [status["id"], credential["id"]]
    reputation, reasons, composite = await broker_b.reputation(key.did)
    ceiling = (await broker_b.store.load_policy()).federation.ceiling
    assert PRIOR < reputation <= ceiling
    assert reputation == pytest.approx(ceiling, abs=0.01)  # 60 clean outcomes, full trust
    assert reasons == ["reputation_imported_prior"]
    assert composite > FRESH_COMPOSITE
    shown = await describe_evidence(broker_b.store, key.did, wall_clock_ms())
    assert [(r["issuer"], r["standing"]) for r in shown["imported"]] == [
        (broker_a.key.did, "valid")
    ]

    # A later status list from A that revokes it takes the prior away again.
    assert await revoke_issued(broker_a.store, credential["id"])
    await asyncio.sleep(1.1)  # validFrom is to the second: the newer list must be newer
    newer = await current_status_list(broker_a.store, broker_a.key, wall_clock_ms())
    assert _codes(await at_b.present(newer)) == []
    await asyncio.sleep(0.3)  # B's peer cache
    assert (await broker_b.reputation(key.did))[0] == PRIOR


async def test_refused_credentials_change_nothing(broker_a: Broker, broker_b: Broker) -> None:
    now = wall_clock_ms()
    status = await current_status_list(broker_a.store, broker_a.key, now)

    # An issuer B does not trust for federation (it is on B's list for identity only).
    other = AgentKey.generate()
    await broker_b.store.add_issuer(other.did, {IssuerRole.IDENTITY})
    stranger, _ = await _veteran(broker_a, outcomes=5)
    subject = record_subject(PeerState(did=stranger.did), "standard", now,
                             success_half_life_ms=DAY_MS, failure_half_life_ms=DAY_MS)  # fmt: skip
    subject["successes"] = 1000.0
    foreign = issue_credential(
        other, trust_record(other.did, subject, "urn:uuid:x", 0, now, DAY_MS), now
    )
    foreign_status = await current_status_list(broker_a.store, other, now)

    tampered_key, tampered_a = await _veteran(broker_a, outcomes=5)
    tampered = copy.deepcopy((await tampered_a.export_trust())["credential"])
    tampered["credentialSubject"]["successes"] = 5000.0

    expired_key, _ = await _veteran(broker_a, outcomes=20)
    expired = await export_record(broker_a.store, broker_a.key, expired_key.did, now - 40 * DAY_MS)

    revoked_key, revoked_a = await _veteran(broker_a, outcomes=20)
    revoked = (await revoked_a.export_trust())["credential"]
    assert await revoke_issued(broker_a.store, revoked["id"])
    await asyncio.sleep(1.1)
    status = await current_status_list(broker_a.store, broker_a.key, wall_clock_ms())

    selfish = AgentKey.generate()
    own = trust_record(selfish.did, {**subject, "id": selfish.did}, "urn:uuid:s", 0, now, DAY_MS)
    self_issued = issue_credential(selfish, own, now)

    unlisted_key, unlisted_a = await _veteran(broker_a, outcomes=5)
    unlisted = (await unlisted_a.export_trust())["credential"]

    veteran_here, veteran_a = await _veteran(broker_a, outcomes=5)
    late = (await veteran_a.export_trust())["credential"]
    policy_b = await broker_b.store.load_policy()
    await broker_b.store.add_outcome(
        veteran_here.did, success=True, weight=1.0, now_ms=wall_clock_ms(), policy=policy_b
    )

    clean = status_list_credential(other.did, b"", wall_clock_ms(), DAY_MS)
    impostor = issue_credential(other, {**clean, "id": status["id"]}, wall_clock_ms())
    cases = [
        # First: before anyone presented A's status list at B.
        (unlisted_key, [unlisted], ["federation_status_unknown"]),
        (stranger, [foreign_status, foreign], ["evidence_issuer_untrusted"]),
        (tampered_key, [status, tampered], ["evidence_bad_signature"]),
        (expired_key, [status, expired], ["evidence_expired"]),
        (selfish, [self_issued], ["evidence_self_issued"]),
        # Another trusted issuer's list claiming A's list id cannot stand in for A's.
        (revoked_key, [status, impostor, revoked], ["evidence_revoked"]),
    ]
    for key, documents, codes in cases:
        client = await broker_b.agent(key)
        reply = await client.present(*documents)
        assert _codes(reply) == codes, key.did
        reputation, reasons, _ = await broker_b.reputation(key.did)
        assert (reputation, reasons) == (PRIOR, ["reputation_cold_start"])

    # A peer with a history at B already gets no imported prior: its own record counts.
    client = await broker_b.agent(veteran_here)
    before = await broker_b.reputation(veteran_here.did)
    assert _codes(await client.present(status, late)) == ["federation_not_first_time"]
    after = await broker_b.reputation(veteran_here.did)
    # (present shook hands first, so identity, and the composite, moved; reputation did not)
    assert after[0] == pytest.approx(before[0]) and after[1] == before[1]
    assert "reputation_imported_prior" not in after[1]


async def test_export_is_told_only_to_the_agent_itself(broker_a: Broker) -> None:
    key, _ = await _veteran(broker_a, outcomes=1)
    service = NegotiationService(broker_a.config, broker_a.store, broker_a.key, wall_clock_ms)
    request = b'{"op": "export", "agent": "%s"}'
    reply = await service.handle(request % key.did.encode(), user_id="someone-else")
    assert reply["code"] == "export_unauthenticated"
    unknown = AgentKey.generate()
    reply = await service.handle(request % unknown.did.encode(), user_id=unknown.did)
    assert reply["code"] == "export_unknown_agent"
    reply = await service.handle(b'{"op": "status_list"}')
    assert reply["credential"]["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]


async def test_the_command_line_carries_a_record_from_a_to_b(
    broker_a: Broker, broker_b: Broker, tmp_path: Path
) -> None:
    key_a = tmp_path / "broker-a.key"
    save_key(key_a, broker_a.key)
    env_a = {"TRUST_BROKER_KEY": str(key_a)}
    alice_key = tmp_path / "alice.key"
    alice = as_json(await cli(broker_a.config, "keygen", "--out", str(alice_key), "--json"))["did"]
    url_a = as_json(await cli(broker_a.config, "provision", alice, "--json"))["amqp_url"]
    await cli(broker_a.config, "handshake", "--key", str(alice_key), "--agent-url", url_a)
    policy = await broker_a.store.load_policy()
    for _ in range(30):
        await broker_a.store.add_outcome(
            alice, success=True, weight=1.0, now_ms=wall_clock_ms(), policy=policy
        )

    record, status = tmp_path / "record.json", tmp_path / "status.json"
    await cli(broker_a.config, "federation", "export", "--key", str(alice_key), "--agent-url",
              url_a, "--out", str(record), "--status-out", str(status))  # fmt: skip
    # Both brokers share one RabbitMQ here, and an AMQP user is per server: provisioning
    # alice at B gives her login a new password, so it comes after she is done with A.
    url_b = as_json(await cli(broker_b.config, "provision", alice, "--json"))["amqp_url"]
    listed = as_json(await cli(broker_b.config, "issuer", "add", broker_a.key.did, "--role",
                               "federation", "--trust", "0.6", "--json"))  # fmt: skip
    assert listed == {"issuers": [{"did": broker_a.key.did, "roles": ["federation"], "trust": 0.6}]}
    shown = as_json(await cli(broker_b.config, "present", "--key", str(alice_key), "--agent-url",
                              url_b, str(status), str(record), "--json"))  # fmt: skip
    assert shown["refused"] == []
    reputation = shown["standing"]["dimensions"]["reputation"]
    assert PRIOR < reputation <= (await broker_b.store.load_policy()).federation.ceiling

    # Ops at A: a record issued straight from the store, revoked, and the list says so.
    issued = as_json(await cli(broker_a.config, "federation", "issue", "--subject", alice, "--json",
                               env=env_a))  # fmt: skip
    credential_id = issued["credential"]["id"]
    await cli(broker_a.config, "federation", "revoke", credential_id, "--json")
    listed_a = as_json(await cli(broker_a.config, "federation", "status-list", "--json", env=env_a))
    index = int(issued["credential"]["credentialStatus"]["statusListIndex"])
    assert revoked_in(issued["credential"]["credentialStatus"], listed_a)
    assert index == 1  # the export took index 0

    # An identity credential as a W3C VC counts like today's format.
    issuer_key = tmp_path / "issuer.key"
    issuer = as_json(await cli(broker_b.config, "keygen", "--out", str(issuer_key), "--json"))[
        "did"
    ]
    await cli(broker_b.config, "issuer", "add", issuer, "--role", "identity")
    identity = tmp_path / "identity.json"
    await cli(broker_b.config, "federation", "identity", "--issuer-key", str(issuer_key),
              "--subject", alice, "--organisation", "Acme Research",
              "--out", str(identity))  # fmt: skip
    before = shown["standing"]["dimensions"]["identity"]
    after = as_json(await cli(broker_b.config, "present", "--key", str(alice_key), "--agent-url",
                              url_b, str(identity), "--json"))  # fmt: skip
    assert after["refused"] == []
    assert after["standing"]["dimensions"]["identity"] > before

    # (Last: provisioning alice at A again gives her login a new password.)
    # The same list, asked over AMQP as an agent would (SDK: AgentClient.status_list).
    url_a = as_json(await cli(broker_a.config, "provision", alice, "--json"))["amqp_url"]
    remote = as_json(await cli(broker_a.config, "federation", "status-list", "--key",
                               str(alice_key), "--agent-url", url_a, "--json"))  # fmt: skip
    assert remote["credentialSubject"] == listed_a["credentialSubject"]
