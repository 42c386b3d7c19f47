"""trust-broker: a message-layer trust broker for AI agents."""

from broker.core.canonical import canonical_json
from broker.core.dataintegrity import add_eddsa_jcs_proof, verify_eddsa_jcs_proof
from broker.core.decision import Action, Decision, Tier
from broker.core.envelope import Envelope, PaymentIntent, decode_envelope, sign_envelope
from broker.core.identity import (
    AgentKey,
    did_from_public_key,
    public_key_from_did,
    verify_signature,
)
from broker.core.policy import Policy
from broker.errors import (
    EnvelopeError,
    IdentityError,
    PolicyError,
    StoreUnavailable,
    TrustBrokerError,
)

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AgentKey",
    "Decision",
    "Envelope",
    "EnvelopeError",
    "IdentityError",
    "PaymentIntent",
    "Policy",
    "PolicyError",
    "StoreUnavailable",
    "Tier",
    "TrustBrokerError",
    "__version__",
    "add_eddsa_jcs_proof",
    "canonical_json",
    "decode_envelope",
    "did_from_public_key",
    "public_key_from_did",
    "sign_envelope",
    "verify_eddsa_jcs_proof",
    "verify_signature",
]
