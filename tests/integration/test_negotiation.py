"""Trust negotiation through the real flows: handshake over AMQP, evidence, manifests,
pacts, key rotation and revocation, against the real RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson
import pytest

from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.agreements import make_manifest, make_pact, make_rotation
from broker.core.evidence import sign_evidence
from broker.core.handshake import answer_challenge
from broker.core.identity import AgentKey
from broker.core.signing import countersign
from broker.errors import EvidenceError
from broker.ops.reading import read_blocked
from broker.router import Router
from broker.router.negotiation import NegotiationService
from broker.store.redis import RedisStore
from tests.integration.conftest import Agent, AgentFactory
from tests.integration.trust import trust_issuer

DAY_MS = 86_400_000


def credential(issuer: AgentKey, subject: str, **overrides: Any) -> dict[str, Any]:
    now = wall_clock_ms()
    fields = {
        "id": f"cred-{os.urandom(4).hex()}", "subject": subject, "organisation": "Acme",
        "issued_at": now - 1000, "expires_at": now + DAY_MS,
    }  # fmt: skip
    return sign_evidence(issuer, "credential", **{**fields, **overrides})


async def outcome_of(agent: Agent, recipient: Agent, config: BrokerConfig) -> tuple[str, str]:
    """Send one data message; return (action, first reason) as the recipient or the
    blocked stream sees it."""
    sent = await agent.send(recipient, {"probe": True})
    for received in await recipient.receive_all(timeout=1.0):
        if received.envelope.id == sent.id:
            return "deliver", received.trust.tier
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for entry in await read_blocked(config, limit=500, idle_timeout=0.3):
            if entry.record["message_id"] == sent.id:
                return "block", entry.record["reason"]
    raise AssertionError("message went nowhere")


async def test_the_lifecycle_walks_through_the_real_flows(
    router: Router,
    config: BrokerConfig,
    store: RedisStore,
    agents: AgentFactory,
    broker_key: AgentKey,
) -> None:
    agent, peer = await agents(), await agents()
    issuer = AgentKey.generate()
    assert await outcome_of(agent, peer, config) == ("block", "insufficient_trust")

    proof = await agent.client.handshake(expected_broker=broker_key.did)
    assert proof.agent == agent.did and proof.expires_ms > wall_clock_ms()
    # Possession alone is not verified identity: still blocked.
    assert await outcome_of(agent, peer, config) == ("block", "insufficient_trust")

    await trust_issuer(store, issuer.did, "identity")
    presented = await agent.client.present(credential(issuer, agent.did))
    assert presented["refused"] == []
    assert await outcome_of(agent, peer, config) == ("deliver", "probation")


async def test_a_self_attested_credential_never_verifies_identity(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    agent, peer = await agents(), await agents()
    await agent.client.handshake()
    # Signed by the agent itself: a valid signature, but anyone can mint that. Refused,
    # even if ops had (wrongly) put the agent itself on the trust list.
    await trust_issuer(store, agent.did, "identity")
    reply = await agent.client.present(credential(agent.key, agent.did))
    assert [r["code"] for r in reply["refused"]] == ["evidence_self_issued"]
    assert await outcome_of(agent, peer, config) == ("block", "insufficient_trust")
    evidence = await store.peer(agent.did, wall_clock_ms(), cached=False)
    assert evidence.credential is None


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("forged", "evidence_bad_signature"),
        ("expired", "evidence_expired"),
        ("mis-bound", "evidence_subject_mismatch"),
        ("altered-expiry", "evidence_bad_signature"),
        ("attestation-altered-expiry", "evidence_bad_signature"),
    ],
)
async def test_bad_evidence_fails_with_its_own_reason(
    router: Router, store: RedisStore, agents: AgentFactory, case: str, code: str
) -> None:
    agent, other = await agents(), await agents()
    issuer = AgentKey.generate()
    await trust_issuer(store, issuer.did, "identity")
    now = wall_clock_ms()
    if case == "forged":
        document = {**credential(issuer, agent.did), "organisation": "Forged Inc"}
    elif case == "expired":
        document = credential(issuer, agent.did, issued_at=now - 2 * DAY_MS, expires_at=now - 1)
    elif case == "mis-bound":
        document = credential(issuer, other.did)
    elif case == "altered-expiry":
        document = credential(issuer, agent.did)
        document["expires_at"] += 365 * DAY_MS
    else:
        document = sign_evidence(
            issuer, "attestation", id="att-1", subject=agent.did, codebase_hash="sha256:ab",
            config_hash="sha256:cd", issued_at=now - 1000, expires_at=now + DAY_MS,
        )  # fmt: skip
        document["expires_at"] += DAY_MS
    reply = await agent.client.present(document)
    assert [(r["index"], r["code"]) for r in reply["refused"]] == [(0, code)]
    assert (await store.peer(agent.did, now, cached=False)).credential is None


async def test_a_challenge_cannot_be_answered_twice(
    router: Router, config: BrokerConfig, store: RedisStore, broker_key: AgentKey
) -> None:
    service = NegotiationService(config, store, broker_key, wall_clock_ms)
    agent = AgentKey.generate()
    hello = await service.handle(orjson.dumps({"op": "hello", "agent": agent.did}))
    response = answer_challenge(agent, hello["challenge"], wall_clock_ms())
    first = await service.handle(orjson.dumps({"op": "prove", "response": response}))
    second = await service.handle(orjson.dumps({"op": "prove", "response": response}))
    assert first["op"] == "proved"
    assert (second["op"], second["code"]) == ("error", "handshake_replay")


async def test_a_challenge_issued_to_one_agent_cannot_be_answered_by_another(
    config: BrokerConfig, store: RedisStore, broker_key: AgentKey
) -> None:
    service = NegotiationService(config, store, broker_key, wall_clock_ms)
    alice, mallory = AgentKey.generate(), AgentKey.generate()
    hello = await service.handle(orjson.dumps({"op": "hello", "agent": alice.did}))
    stolen = answer_challenge(mallory, hello["challenge"], wall_clock_ms())
    reply = await service.handle(orjson.dumps({"op": "prove", "response": stolen}))
    assert reply["code"] == "handshake_bad_signature"


async def test_pending_challenges_are_bounded_and_expire(
    config: BrokerConfig, store: RedisStore, broker_key: AgentKey
) -> None:
    clock = [wall_clock_ms()]
    service = NegotiationService(
        config, store, broker_key, lambda: clock[0], challenge_ttl_ms=30_000, max_pending=2
    )
    agent = AgentKey.generate()
    replies = [
        await service.handle(orjson.dumps({"op": "hello", "agent": agent.did})) for _ in range(3)
    ]
    assert [r["op"] for r in replies] == ["challenge", "challenge", "error"]
    assert replies[2]["code"] == "handshake_busy"
    response = answer_challenge(agent, replies[0]["challenge"], clock[0])
    clock[0] += 30_001  # the challenge expired before the answer arrived
    reply = await service.handle(orjson.dumps({"op": "prove", "response": response}))
    assert reply["code"] in ("handshake_expired", "handshake_replay")
    assert (await service.handle(orjson.dumps({"op": "hello", "agent": agent.did})))[
        "op"
    ] == "challenge"


async def test_a_warm_handshake_resumes_the_session_without_a_challenge(
    router: Router, agents: AgentFactory, broker_key: AgentKey
) -> None:
    agent = await agents()
    cold = await agent.client.handshake(expected_broker=broker_key.did)
    warm = await agent.client.handshake(expected_broker=broker_key.did, resume=True)
    assert (warm.verified_ms, warm.expires_ms) == (cold.verified_ms, cold.expires_ms)


async def test_concurrent_requests_of_one_agent_each_get_their_own_reply(
    router: Router, store: RedisStore, agents: AgentFactory, broker_key: AgentKey
) -> None:
    agent = await agents()
    issuer = AgentKey.generate()
    await trust_issuer(store, issuer.did, "identity")
    await agent.client.handshake(expected_broker=broker_key.did)
    now = wall_clock_ms()
    documents = [credential(issuer, agent.did, issued_at=now - 3000 + i) for i in range(3)]
    # One channel carries every request; replies are matched by correlation id, so a
    # mix-up would hand a handshake a "presented" reply (or the other way round).
    results = await asyncio.gather(
        *(agent.client.present(document) for document in documents),
        *(agent.client.handshake(expected_broker=broker_key.did, resume=True) for _ in range(3)),
    )
    presented, proofs = results[:3], results[3:]
    # Each reply answers its own request: its document was recorded, or refused because a
    # newer credential of the three got there first (supersession).
    for reply, document in zip(presented, documents, strict=True):
        codes = [r["code"] for r in reply["refused"]]
        assert reply["accepted"] == [document["id"]] or codes == ["evidence_superseded"], reply
    assert presented[2]["accepted"] == [documents[2]["id"]]  # the newest always stands
    assert {proof.agent for proof in proofs} == {agent.did}


async def test_the_agent_refuses_a_broker_it_did_not_expect(
    router: Router, agents: AgentFactory
) -> None:
    agent = await agents()
    with pytest.raises(EvidenceError) as error:
        await agent.client.handshake(expected_broker=AgentKey.generate().did)
    assert error.value.code == "handshake_bad_broker"


async def test_revoked_credential_stops_counting_on_every_router_within_a_second(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    agent, peer = await agents(), await agents()
    issuer = AgentKey.generate()
    await trust_issuer(store, issuer.did, "identity")
    await agent.client.handshake()
    document = credential(issuer, agent.did)
    await agent.client.present(document)
    assert await outcome_of(agent, peer, config) == ("deliver", "probation")
    await store.revoke_evidence(document["id"])
    await asyncio.sleep(1.0)
    assert await outcome_of(agent, peer, config) == ("block", "insufficient_trust")
    reasons = (await read_blocked(config, limit=50))[-1].record["decision"]["reasons"]
    assert "credential_revoked" in reasons


async def test_a_rotated_key_keeps_its_history_and_the_old_key_is_refused(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    from tests.integration.trust import add_history

    old, peer = await agents(), await agents()
    await add_history(store, old.did, 10)
    new_key = AgentKey.generate()
    reply = await old.client.present(make_rotation(old.key, new_key, now_ms=wall_clock_ms()))
    assert reply["refused"] == []
    now = wall_clock_ms()
    carried = await store.peer(new_key.did, now, cached=False)
    assert carried.successes.at(now, 30 * DAY_MS) == pytest.approx(10, rel=1e-3)
    assert carried.clean_streak == 10
    assert await outcome_of(old, peer, config) == ("block", "revoked_key")
    # The same history cannot be handed over twice.
    again = await old.client.present(make_rotation(old.key, AgentKey.generate(), now_ms=now))
    assert [r["code"] for r in again["refused"]] == ["rotation_revoked"]


async def test_a_rotation_not_signed_by_both_keys_is_refused(
    router: Router, agents: AgentFactory
) -> None:
    old = await agents()
    new_key, thief = AgentKey.generate(), AgentKey.generate()
    rotation = make_rotation(old.key, new_key, now_ms=wall_clock_ms())
    forged = {**rotation, "new": thief.did}
    reply = await old.client.present(forged)
    assert [r["code"] for r in reply["refused"]] == ["evidence_bad_signature"]


async def test_an_iatp_manifest_is_accepted_and_its_declared_trust_never_scores(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    agent, sender = await agents(), await agents()
    iatp = {
        "agent_id": "my-agent", "trust_level": "verified_partner",
        "capabilities": {"reversibility": "partial"},
        "privacy_contract": {"retention": "permanent"}, "scopes": ["kind:data", "kind:request"],
    }  # fmt: skip
    now = wall_clock_ms()
    before = await store.peer(agent.did, now)
    reply = await agent.client.present(
        make_manifest(agent.key, now_ms=now, ttl_ms=DAY_MS, kinds=[], retention="", iatp=iatp)
    )
    assert reply["refused"] == []
    after = await store.peer(agent.did, now, cached=False)
    assert after.manifest is not None
    assert after.manifest.kinds == frozenset({"data", "request"})
    assert (after.successes, after.credential) == (before.successes, before.credential)
    # The recipient declared permanent retention: card data to it is now blocked.
    await make_trusted(store, sender)
    await sender.send(agent, {"pan": "x"}, data_classes=("payment_card",))
    entries = await read_blocked(config, limit=10, idle_timeout=1.0)
    assert [e.record["reason"] for e in entries] == ["privacy_violation"]


async def make_trusted(store: RedisStore, agent: Agent) -> None:
    from tests.integration.trust import make_level

    await make_level(store, agent.client, AgentKey.generate(), "trusted")


async def test_a_manifest_cannot_loosen_what_ops_provisioned(
    router: Router, store: RedisStore, agents: AgentFactory
) -> None:
    agent = await agents(retention="permanent")
    now = wall_clock_ms()
    await agent.client.present(
        make_manifest(agent.key, now_ms=now, ttl_ms=DAY_MS, kinds=["data"], retention="ephemeral")
    )
    profile = await store.recipient(agent.did, now)
    assert profile is not None and profile.retention == "permanent"


async def test_pacts_gate_and_score_messages_for_recipients_that_require_them(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory
) -> None:
    sender, recipient = await agents(), await agents(requires_pact=True)
    await make_trusted(store, sender)
    assert (await outcome_of(sender, recipient, config)) == ("block", "pact_violation")

    now = wall_clock_ms()
    pact = make_pact(sender.key, recipient.did, now_ms=now, ttl_ms=DAY_MS, kinds=["data"])
    signed = countersign(recipient.key, pact, "recipient_signature")
    assert (await sender.client.present(signed))["refused"] == []
    sent = await sender.send(recipient, {"in": "scope"})
    got = await recipient.receive_all()
    assert [r.envelope.id for r in got] == [sent.id]
    assert got[0].trust.dimensions["compliance"] == 1.0 and "pact_in_scope" in got[0].trust.reasons
    await sender.send(recipient, {"out": "of scope"}, kind="request")
    entries = await read_blocked(config, limit=10, idle_timeout=1.0)
    assert entries[-1].record["reason"] == "pact_violation"


async def test_a_pact_signed_by_one_party_only_is_refused(
    router: Router, agents: AgentFactory
) -> None:
    sender, recipient = await agents(), await agents()
    pact = make_pact(
        sender.key, recipient.did, now_ms=wall_clock_ms(), ttl_ms=DAY_MS, kinds=["data"]
    )
    reply = await sender.client.present(pact)
    assert [r["code"] for r in reply["refused"]] == ["evidence_bad_signature"]
