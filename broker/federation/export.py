"""Issuing trust credentials: what a broker exports about an agent it knows.

Asked on trust.handshake (`export`, answered only to the agent itself, like `standing`),
by ops (`trust-broker federation issue`) or by the SDK (`AgentClient.export_trust`). Each
credential takes a fresh index in this broker's revocation status list; `status_list`
returns the signed list, which anyone may fetch and present beside the credential.
"""

from __future__ import annotations

import uuid
from typing import Any

from broker.core.handshake import error_reply, requesting_agent
from broker.core.identity import AgentKey
from broker.errors import EvidenceError
from broker.federation.record import record_subject, status_list_credential, trust_record
from broker.federation.vc import issue_credential
from broker.store.redis import RedisStore

# One export per agent per this interval: each signs and reads a few keys.
EXPORT_INTERVAL_MS = 1_000
FEDERATION_OPS = ("export", "status_list")


async def export_record(
    store: RedisStore, broker_key: AgentKey, did: str, now_ms: int
) -> dict[str, Any]:
    """A signed TrustRecordCredential about `did`, which this broker must know."""
    from broker.peerview import describe_peer

    peer = await store.peer(did, now_ms, cached=False)
    if peer.revoked:
        raise EvidenceError("this agent's key is revoked here", code="export_revoked_key")
    if (
        peer.possession_verified_ms is None
        and peer.credential is None
        and peer.successes.value == 0
    ):
        raise EvidenceError("this broker holds no record of the agent", code="export_unknown_agent")
    policy = await store.load_policy()
    tier = (await describe_peer(store, did, now_ms))["tier"]
    subject = record_subject(
        peer, tier, now_ms,
        success_half_life_ms=policy.reputation.success_half_life_ms,
        failure_half_life_ms=policy.reputation.failure_half_life_ms,
    )  # fmt: skip
    credential_id = f"urn:uuid:{uuid.uuid4()}"
    index = await store.federation.allocate_index(credential_id)
    validity = policy.federation.credential_validity_ms
    unsigned = trust_record(broker_key.did, subject, credential_id, index, now_ms, validity)
    return issue_credential(broker_key, unsigned, now_ms)


async def current_status_list(
    store: RedisStore, broker_key: AgentKey, now_ms: int
) -> dict[str, Any]:
    """This broker's revocation list, signed now."""
    policy = await store.load_policy()
    bits = await store.federation.status_bits()
    validity = policy.federation.status_list_validity_ms
    return issue_credential(
        broker_key, status_list_credential(broker_key.did, bits, now_ms, validity), now_ms
    )


async def revoke_issued(store: RedisStore, credential_id: str) -> bool:
    """Revoke a trust credential this broker issued; False for an id it never issued."""
    index = await store.federation.issued_index(credential_id)
    if index is None:
        return False
    await store.federation.set_revoked(index)
    return True


async def federation_request(
    store: RedisStore,
    broker_key: AgentKey,
    request: dict[str, Any],
    now_ms: int,
    user_id: str | None,
) -> dict[str, Any]:
    """Answer `export` (only to the agent itself) or `status_list` (to anyone)."""
    if request.get("op") == "status_list":
        return {
            "op": "status_list",
            "credential": await current_status_list(store, broker_key, now_ms),
        }
    agent = requesting_agent(request, user_id)
    if agent is None:
        return error_reply(
            "export_unauthenticated",
            "a trust record is issued only to the agent itself: publish with the AMQP login "
            "named after its DID, with user_id set to it",
        )
    if not await store.try_lock(f"export:{agent}", EXPORT_INTERVAL_MS):
        return error_reply("export_busy", f"one export per {EXPORT_INTERVAL_MS} ms")
    try:
        credential = await export_record(store, broker_key, agent, now_ms)
    except EvidenceError as exc:
        return error_reply(exc.code, str(exc))
    status = await current_status_list(store, broker_key, now_ms)
    return {"op": "exported", "credential": credential, "status_list": status}
