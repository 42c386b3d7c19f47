"""Bring a provisioned agent to a trust level with real, verified evidence."""

from __future__ import annotations

import os

from broker.client import AgentClient
from broker.clock import wall_clock_ms
from broker.evidence import bond_from, sign_evidence, verify_evidence
from broker.identity import AgentKey
from broker.policy import Policy
from broker.store.redis import RedisStore

DAY_MS = 86_400_000


async def verify_identity(store: RedisStore, agent: AgentClient, issuer: AgentKey) -> str:
    """Handshake over AMQP, then an issuer-signed credential presented; returns its id."""
    now = wall_clock_ms()
    await agent.handshake()
    await store.add_issuer(issuer.did)
    credential_id = f"cred-{os.urandom(6).hex()}"
    document = sign_evidence(
        issuer, "credential", id=credential_id, subject=agent.did, organisation="Test Org",
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


async def post_bond(store: RedisStore, did: str, issuer: AgentKey, usd: int) -> None:
    """An issuer-signed stake bond of `usd` dollars."""
    now = wall_clock_ms()
    document = sign_evidence(
        issuer, "bond", id=f"bond-{os.urandom(6).hex()}", subject=did,
        amount_minor=usd * 100, currency="USD", issued_at=now - 1000, expires_at=now + DAY_MS,
    )  # fmt: skip
    await store.set_bond(did, bond_from(verify_evidence(document, "bond", now)))


async def make_level(store: RedisStore, agent: AgentClient, issuer: AgentKey, level: str) -> None:
    """new | probation | established | trusted, as in the seeds' lifecycle."""
    if level == "new":
        return
    await verify_identity(store, agent, issuer)
    if level in ("established", "trusted"):
        await add_history(store, agent.did, 10 if level == "established" else 60)
    if level == "trusted":
        # Stake counts against max(full coverage, payment): cover the trusted cap.
        await post_bond(store, agent.did, issuer, 20_000)
