"""One error tree for the whole broker; library errors are translated at the boundary.

Every error the broker raises on purpose is a TrustBrokerError. A library's errors (redis,
aio-pika, aiormq, sockets) are translated where the broker calls the library, with
`map_exceptions` (as httpcore's _exceptions.py does): broker/store/base.py for Redis,
broker/amqp/errors.py names what RabbitMQ's client can raise, and broker/ops/amqp.py
turns it into ReviewError for the review operations. Callers above those boundaries
catch the broker's errors, never a library's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType

# What a library error becomes: a function of the error, so the new one can say what
# failed. Such a function may set __suppress_context__ on what it returns, to say that
# the library's error explains nothing more (it is then not chained as the cause).
ExceptionMapping = Mapping[type[Exception], Callable[[Exception], Exception]]


class MapExceptions:
    """A reusable, reentrant `with` block that re-raises an exception of a type in its
    mapping (the first entry it is an instance of) as what that entry makes of it, with
    the original as its cause; others pass through. Plain __exit__, no generator: the
    store enters one on every Redis call."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: ExceptionMapping) -> None:
        self._mapping = mapping

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not isinstance(exc, Exception):
            return
        for library, translate in self._mapping.items():
            if isinstance(exc, library):
                mapped = translate(exc)
                if mapped.__suppress_context__:
                    raise mapped from None
                raise mapped from exc


def map_exceptions(mapping: ExceptionMapping) -> MapExceptions:
    """`with map_exceptions({LibraryError: to_broker_error}):` (httpcore's helper)."""
    return MapExceptions(mapping)


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
        self.code = str(code)  # plain text, also when given a Reason


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
        self.code = str(code)  # plain text, also when given a Reason


class ReviewError(TrustBrokerError):
    """Reading or deciding what the router set aside failed or was refused; `code` says why
    (the console maps it to an HTTP status)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = str(code)  # plain text, also when given a Reason
