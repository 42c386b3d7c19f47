"""Challenge-response proof of key possession (pure; the AMQP transport lives elsewhere).

The broker issues a fresh 256-bit challenge, signed with its own did:key so the agent
knows who asked. The agent signs {challenge, agent DID, broker DID}; the broker checks
the signature, that the challenge is one it issued, unexpired and not yet answered.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from broker.canonical import canonical_json
from broker.errors import EvidenceError, IdentityError
from broker.identity import AgentKey, cached_public_key, verify_signature

CHALLENGE_TYPE = "trust-broker/handshake-challenge"
RESPONSE_TYPE = "trust-broker/handshake-response"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str) or len(text) != 86:
        raise EvidenceError("signature must be 86 base64url characters", code="handshake_malformed")
    return base64.urlsafe_b64decode(text + "==")


def _signed(key: AgentKey, document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "signature": _b64(key.sign(canonical_json(document)))}


def _verify(document: dict[str, Any], signer: str) -> bool:
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    try:
        key = cached_public_key(signer)
    except IdentityError:
        return False
    return verify_signature(key, canonical_json(unsigned), _unb64(document.get("signature")))


def answer_challenge(agent: AgentKey, challenge: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The agent's side: check the broker signed the challenge, then sign the answer."""
    broker = challenge.get("broker")
    if challenge.get("type") != CHALLENGE_TYPE or not isinstance(broker, str):
        raise EvidenceError("not a handshake challenge", code="handshake_malformed")
    if not _verify(challenge, broker):
        raise EvidenceError("challenge is not signed by the broker", code="handshake_bad_broker")
    if challenge.get("expires_at", 0) <= now_ms:
        raise EvidenceError("challenge has expired", code="handshake_expired")
    return _signed(
        agent,
        {"type": RESPONSE_TYPE, "challenge": challenge["challenge"], "agent": agent.did,
         "broker": broker, "signed_at": now_ms},
    )  # fmt: skip


@dataclass(frozen=True)
class Proof:
    """A verified proof that `agent` holds its key, valid until `expires_ms`."""

    agent: str
    verified_ms: int
    expires_ms: int


class ChallengeBook:
    """Outstanding challenges: single-use, expiring, bounded (oldest dropped first)."""

    def __init__(
        self, broker: AgentKey, *, ttl_ms: int = 30_000, max_pending: int = 10_000,
        session_ms: int = 3_600_000,
    ) -> None:  # fmt: skip
        self.broker = broker
        self._ttl_ms = ttl_ms
        self._max_pending = max_pending
        self._session_ms = session_ms
        self._pending: OrderedDict[str, int] = OrderedDict()

    def issue(self, random32: bytes, now_ms: int) -> dict[str, Any]:
        """A new challenge signed by the broker (random32 from os.urandom(32))."""
        if len(random32) != 32:
            raise ValueError("a challenge is 256 random bits")
        challenge = random32.hex()
        expires = now_ms + self._ttl_ms
        self._pending[challenge] = expires
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
        return _signed(
            self.broker,
            {"type": CHALLENGE_TYPE, "challenge": challenge, "broker": self.broker.did,
             "issued_at": now_ms, "expires_at": expires},
        )  # fmt: skip

    def verify(self, response: dict[str, Any], now_ms: int) -> Proof:
        """Check an answer; the challenge is consumed whether or not the answer is good."""
        if response.get("type") != RESPONSE_TYPE or response.get("broker") != self.broker.did:
            raise EvidenceError("not a response to this broker", code="handshake_malformed")
        expires = self._pending.pop(str(response.get("challenge")), None)
        if expires is None:
            raise EvidenceError("unknown or already answered challenge", code="handshake_replay")
        if expires <= now_ms:
            raise EvidenceError("challenge has expired", code="handshake_expired")
        agent = response.get("agent")
        if not isinstance(agent, str) or not _verify(response, agent):
            raise EvidenceError(
                "answer is not signed by the agent's key", code="handshake_bad_signature"
            )
        return Proof(agent, now_ms, now_ms + self._session_ms)
