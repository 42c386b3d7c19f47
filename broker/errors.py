"""One error tree for the whole broker; library errors are translated at the boundary."""

from __future__ import annotations


class TrustBrokerError(Exception):
    """Base of every error the broker raises on purpose."""


class IdentityError(TrustBrokerError):
    """A DID or key is malformed or unsupported."""


class EnvelopeError(TrustBrokerError):
    """An envelope is malformed, oversized or fails validation.

    `field` names the offending field (dotted path) and `code` is the machine-readable
    reason recorded on the blocked stream.
    """

    def __init__(self, message: str, *, field: str = "", code: str = "malformed") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


class PolicyError(TrustBrokerError):
    """A routing policy failed validation; it is refused, never silently repaired."""


class StoreUnavailable(TrustBrokerError):
    """The peer-state store cannot be reached; the router must stop taking messages."""


class BrokerUnavailable(TrustBrokerError):
    """No RabbitMQ node confirmed a publish before the deadline; retrying the same bytes
    later is safe (the broker routes identical copies once)."""


class Backpressure(BrokerUnavailable):
    """RabbitMQ kept refusing the publish (a nack) until the deadline: this agent's own
    ingress lane is full because it publishes faster than the router takes its turn.
    Nothing was accepted; publishing the same bytes again later is safe."""


class ConfigError(TrustBrokerError):
    """Command-line or environment configuration is invalid."""


class EvidenceError(TrustBrokerError):
    """Signed evidence (credential, attestation, bond) is forged, expired or malformed.

    `code` is the machine-readable reason, e.g. ``evidence_bad_signature``.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class ReviewError(TrustBrokerError):
    """Reading or deciding what the router set aside failed or was refused; `code` says why
    (the console maps it to an HTTP status)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
