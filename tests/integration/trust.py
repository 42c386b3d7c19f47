"""Bring a provisioned agent to a trust level with real, verified evidence."""

from __future__ import annotations

import os

from broker.clock import wall_clock_ms
from broker.core.evidence import sign_evidence
from broker.core.identity import AgentKey
from broker.core.policy import Policy
from broker.core.state import IssuerRole
from broker.sdk.client import AgentClient
from broker.store.redis import RedisStore

DAY_MS = 86_400_000


async def trust_issuer(store: RedisStore, did: str, *roles: str) -> None:
    """Put `did` on the trust list for `roles` (what `trust-broker issuer add` does)."""
    await store.add_issuer(did, frozenset(IssuerRole(role) for role in roles))


async def verify_identity(
    store: RedisStore, agent: AgentClient, issuer: AgentKey, *, organisation: str = ""
) -> str:
    """Handshake over AMQP, then an issuer-signed credential presented; returns its id.
    Each agent is its own organisation unless `organisation` is given."""
    now = wall_clock_ms()
    await agent.handshake()
    await trust_issuer(store, issuer.did, "identity")
    credential_id = f"cred-{os.urandom(6).hex()}"
    document = sign_evidence(
        issuer, "credential", id=credential_id, subject=agent.did,
        organisation=organisation or f"Test Org {agent.did[-8:]}",
        issued_at=now - 1000, expires_at=now + DAY_MS,
    )  # fmt: skip
    presented = await agent.present(document)
    assert presented["accepted"] == [credential_id], presented
    return credential_id


async def add_history(store: RedisStore, did: str, successes: int) -> None:
    """Verified successful interactions and the matching clean streak."""
    now = wall_clock_ms()
    for _ in range(successes):
        await store.add_outcome(did, success=True, weight=1.0, now_ms=now, policy=Policy())
    await store.set_clean_streak(did, successes)


async def post_bond(store: RedisStore, agent: AgentClient, custodian: AgentKey, usd: int) -> str:
    """A stake bond of `usd` dollars from `custodian` (trusted for stake), presented by the
    agent; returns its id."""
    now = wall_clock_ms()
    await trust_issuer(store, custodian.did, "stake")
    bond_id = f"bond-{os.urandom(6).hex()}"
    document = sign_evidence(
        custodian, "bond", id=bond_id, subject=agent.did,
        amount_minor=usd * 100, currency="USD", issued_at=now - 1000, expires_at=now + DAY_MS,
    )  # fmt: skip
    presented = await agent.present(document)
    assert presented["accepted"] == [bond_id], presented
    return bond_id


async def make_level(
    store: RedisStore, agent: AgentClient, issuer: AgentKey, level: str, *, organisation: str = ""
) -> None:
    """new | probation | established | trusted, as in the seeds' lifecycle."""
    if level == "new":
        return
    await verify_identity(store, agent, issuer, organisation=organisation)
    if level in ("established", "trusted"):
        await add_history(store, agent.did, 10 if level == "established" else 60)
    if level == "trusted":
        # Stake counts against max(full coverage, payment): cover the trusted cap.
        await post_bond(store, agent, AgentKey.generate(), 20_000)
