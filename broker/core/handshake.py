"""Challenge-response proof of key possession: the documents, in pure code.

The broker issues a fresh 256-bit challenge signed with its own did:key, so the agent
knows who asked. The agent signs {challenge, agent DID, broker DID}. The broker checks
the answer against the challenge it stored (single-use, expiring; see the store) and
replies with a signed result the agent can check in turn: the handshake is mutual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.core.identity import AgentKey
from broker.core.signing import sign_document, signed_by
from broker.errors import EvidenceError

CHALLENGE_TYPE = "trust-broker/handshake-challenge"
RESPONSE_TYPE = "trust-broker/handshake-response"
RESULT_TYPE = "trust-broker/handshake-result"


@dataclass(frozen=True)
class Proof:
    """A verified proof that `agent` holds its key, valid until `expires_ms`."""

    agent: str
    verified_ms: int
    expires_ms: int


def make_challenge(
    broker: AgentKey, agent: str, random32: bytes, now_ms: int, ttl_ms: int
) -> dict[str, Any]:
    """A challenge for `agent`, signed by the broker (random32 from os.urandom(32))."""
    if len(random32) != 32:
        raise ValueError("a challenge is 256 random bits")
    return sign_document(
        broker,
        {"type": CHALLENGE_TYPE, "challenge": random32.hex(), "broker": broker.did,
         "agent": agent, "issued_at": now_ms, "expires_at": now_ms + ttl_ms},
    )  # fmt: skip


def answer_challenge(
    agent: AgentKey, challenge: dict[str, Any], now_ms: int, *, expected_broker: str | None = None
) -> dict[str, Any]:
    """The agent's side: check the broker signed the challenge, then sign the answer."""
    broker = challenge.get("broker")
    if challenge.get("type") != CHALLENGE_TYPE or not isinstance(broker, str):
        raise EvidenceError("not a handshake challenge", code="handshake_malformed")
    if expected_broker is not None and broker != expected_broker:
        raise EvidenceError("challenge comes from another broker", code="handshake_bad_broker")
    if not signed_by(challenge, broker):
        raise EvidenceError("challenge is not signed by the broker", code="handshake_bad_broker")
    if challenge.get("expires_at", 0) <= now_ms:
        raise EvidenceError("challenge has expired", code="handshake_expired")
    return sign_document(
        agent,
        {"type": RESPONSE_TYPE, "challenge": challenge["challenge"], "agent": agent.did,
         "broker": broker, "signed_at": now_ms},
    )  # fmt: skip


def check_response(
    response: dict[str, Any],
    broker: str,
    pending: tuple[str, int] | None,
    now_ms: int,
    session_ms: int,
) -> Proof:
    """Verify an answer against the pending (agent, expires_ms) of its challenge.

    `pending` is None when the challenge is unknown or was already answered: the store
    hands each challenge out exactly once.
    """
    if response.get("type") != RESPONSE_TYPE or response.get("broker") != broker:
        raise EvidenceError("not a response to this broker", code="handshake_malformed")
    if pending is None:
        raise EvidenceError("unknown or already answered challenge", code="handshake_replay")
    agent, expires_ms = pending
    if expires_ms <= now_ms:
        raise EvidenceError("challenge has expired", code="handshake_expired")
    if response.get("agent") != agent or not signed_by(response, agent):
        raise EvidenceError(
            "answer is not signed by the key the challenge was issued to",
            code="handshake_bad_signature",
        )
    return Proof(agent, now_ms, now_ms + session_ms)


def make_result(broker: AgentKey, proof: Proof, challenge: str) -> dict[str, Any]:
    """The broker's signed confirmation, so the agent knows the broker recorded it."""
    return sign_document(
        broker,
        {"type": RESULT_TYPE, "agent": proof.agent, "broker": broker.did, "challenge": challenge,
         "verified_at": proof.verified_ms, "expires_at": proof.expires_ms},
    )  # fmt: skip


def error_reply(code: str, message: str) -> dict[str, Any]:
    """The reply to any trust.handshake request the broker refuses."""
    return {"op": "error", "code": code, "message": message}


def requesting_agent(request: dict[str, Any], user_id: str | None) -> str | None:
    """The request's `agent` when the request came from that agent's own login (RabbitMQ
    validates the user_id property against the login that publishes), else None: what
    is told only to an agent itself (its standing, its trust record) needs this."""
    agent = request.get("agent")
    return agent if isinstance(agent, str) and agent == user_id else None
