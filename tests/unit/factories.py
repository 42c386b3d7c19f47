"""Builders for the unit tests of the pure core: fixed keys, a fixed clock, plain state.

Nothing here reads the clock or the network. Every builder returns a valid object and
takes keyword overrides, so a test states only what it is about.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import orjson

from broker.core.envelope import (
    DecodedEnvelope,
    Envelope,
    PaymentIntent,
    decode_envelope,
    encode_envelope,
)
from broker.core.envelope import sign_envelope as _sign
from broker.core.identity import AgentKey
from broker.core.policy import Policy, ReputationModel, Weights
from broker.core.state import (
    Attestation,
    Bond,
    Credential,
    DecayedCount,
    Manifest,
    PactTerms,
    PeerState,
    RecipientProfile,
    TrustContext,
    TrustList,
)

# 2025-06-15T15:06:40Z. The core never reads the clock; neither do its tests.
NOW = 1_750_000_000_000
SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
DAY_MS = 86_400_000

SENDER = AgentKey(bytes([1]) * 32)
RECIPIENT = AgentKey(bytes([2]) * 32)
OTHER = AgentKey(bytes([3]) * 32)
ISSUER = AgentKey(bytes([9]) * 32).did
UNTRUSTED_ISSUER = AgentKey(bytes([10]) * 32).did
CUSTODIAN = AgentKey(bytes([11]) * 32).did
# ISSUER signs identity credentials and attestations, CUSTODIAN holds bonds.
TRUST_LIST = TrustList({ISSUER: frozenset({"identity", "attestation"}),
                        CUSTODIAN: frozenset({"stake"})})  # fmt: skip

DEFAULT_POLICY = Policy()

_serial = itertools.count(1)


def sign_envelope(key: AgentKey = SENDER, **overrides: Any) -> Envelope:
    """A signed data envelope from `key` to RECIPIENT at NOW, unique id and nonce."""
    n = next(_serial)
    fields: dict[str, Any] = {
        "id": f"msg-{n:08d}",
        "recipient": RECIPIENT.did,
        "kind": "data",
        "created_at": NOW,
        "nonce": f"{n:032x}",
        "body": {"task": "summarise", "items": [1, 2, 3]},
    }
    fields.update(overrides)
    return _sign(key, **fields)


def payment_envelope(amount: str, currency: str = "USD", **overrides: Any) -> Envelope:
    """A signed payment envelope for an exact decimal `amount`."""
    intent = PaymentIntent(currency=currency, amount=amount)
    return sign_envelope(kind="payment", payment=intent, **overrides)


def decoded(envelope: Envelope) -> DecodedEnvelope:
    """The envelope as the router sees it: encoded to the wire and decoded again."""
    return decode_envelope(encode_envelope(envelope))


def wire(envelope: Envelope) -> dict[str, Any]:
    """The wire JSON object of an envelope, ready to be tampered with."""
    obj: dict[str, Any] = orjson.loads(encode_envelope(envelope))
    return obj


def credential(**overrides: Any) -> Credential:
    """A credential for SENDER from the trusted ISSUER, current at NOW."""
    fields: dict[str, Any] = {
        "credential_id": "cred-1",
        "issuer": ISSUER,
        "subject": SENDER.did,
        "organisation": "Example Ltd",
        "issued_at_ms": NOW - 30 * DAY_MS,
        "expires_at_ms": NOW + 365 * DAY_MS,
    }
    fields.update(overrides)
    return Credential(**fields)


def attestation(**overrides: Any) -> Attestation:
    """A code attestation for SENDER from the trusted ISSUER, current at NOW."""
    fields: dict[str, Any] = {
        "attestation_id": "att-1",
        "issuer": ISSUER,
        "subject": SENDER.did,
        "codebase_hash": "sha256:" + "a" * 64,
        "config_hash": "sha256:" + "b" * 64,
        "issued_at_ms": NOW - DAY_MS,
        "expires_at_ms": NOW + 30 * DAY_MS,
    }
    fields.update(overrides)
    return Attestation(**fields)


def bond(amount_minor: int = 1_000_00, currency: str = "USD", **overrides: Any) -> Bond:
    """A bond for SENDER held by the trusted CUSTODIAN, current at NOW."""
    fields: dict[str, Any] = {
        "bond_id": "bond-1",
        "issuer": CUSTODIAN,
        "amount_minor": amount_minor,
        "currency": currency,
        "issued_at_ms": NOW - DAY_MS,
        "expires_at_ms": NOW + 30 * DAY_MS,
    }
    fields.update(overrides)
    return Bond(**fields)


def manifest(*kinds: str, **overrides: Any) -> Manifest:
    """SENDER's own manifest declaring `kinds`, current at NOW."""
    fields: dict[str, Any] = {
        "manifest_id": "manifest-1",
        "kinds": frozenset(kinds),
        "issued_at_ms": NOW - DAY_MS,
        "expires_at_ms": NOW + 30 * DAY_MS,
    }
    fields.update(overrides)
    return Manifest(**fields)


def pact(**overrides: Any) -> PactTerms:
    """A pact from SENDER to RECIPIENT covering data and payments up to 1,000 USD."""
    fields: dict[str, Any] = {
        "pact_id": "pact-1",
        "sender": SENDER.did,
        "recipient": RECIPIENT.did,
        "kinds": frozenset({"data", "request", "payment"}),
        "data_classes": frozenset({"pii"}),
        "max_payment_minor": 1_000_00,
        "currency": "USD",
        "expires_at_ms": NOW + DAY_MS,
    }
    fields.update(overrides)
    return PactTerms(**fields)


def peer(**overrides: Any) -> PeerState:
    """SENDER's state; with no overrides, a peer the broker has never seen."""
    return PeerState(did=SENDER.did, **overrides)


def possession(verified_ms: int = NOW - DAY_MS) -> dict[str, Any]:
    """PeerState fields for a key-possession proof made at `verified_ms`, valid a week."""
    return {
        "possession_verified_ms": verified_ms,
        "possession_expires_ms": verified_ms + 7 * DAY_MS,
    }


def recipient(**overrides: Any) -> RecipientProfile:
    """RECIPIENT's profile; with no overrides it accepts everything."""
    return RecipientProfile(did=RECIPIENT.did, **overrides)


def context(peer_state: PeerState | None = None, **overrides: Any) -> TrustContext:
    """A context that trusts ISSUER and CUSTODIAN and knows RECIPIENT."""
    fields: dict[str, Any] = {
        "peer": peer_state if peer_state is not None else peer(),
        "recipient": recipient(),
        "issuers": TRUST_LIST,
    }
    fields.update(overrides)
    return TrustContext(**fields)


# The lifecycle of one sender, as in the issue's table. Each stage adds to the last.


def new_peer() -> PeerState:
    """Valid signature, nothing else known."""
    return peer()


def identity_verified_peer() -> PeerState:
    """+ proof of key possession and a credential from a trusted issuer."""
    return peer(**possession(), credential=credential())


def established_peer() -> PeerState:
    """+ 10 successful interactions, all of them clean."""
    return peer(
        **possession(),
        credential=credential(),
        successes=DecayedCount(10.0, NOW),
        clean_streak=10,
    )


def trusted_peer(bond_usd: int = 10_000) -> PeerState:
    """+ 50 more successes (60 in all) and a posted stake bond."""
    return peer(
        **possession(),
        credential=credential(),
        successes=DecayedCount(60.0, NOW),
        clean_streak=60,
        bond=bond(bond_usd * 100),
    )


def anomalous_peer() -> PeerState:
    """The trusted peer just after a detected anomaly."""
    return dataclasses.replace(trusted_peer(), last_anomaly_ms=NOW - SECOND_MS)


def single_dimension_policy(score: float, **overrides: Any) -> Policy:
    """A policy whose composite for a sender with no history is exactly `score`.

    All weight sits on reputation, and reputation without evidence is its prior.
    """
    return Policy(
        weights=Weights(identity=0.0, reputation=1.0, compliance=0.0, behavioral=0.0, stake=0.0),
        reputation=ReputationModel(prior=score, ceiling=1.0),
        **overrides,
    )
