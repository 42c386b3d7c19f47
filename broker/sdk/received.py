"""What a delivered message carries: the verified envelope and the router's decision on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from broker.core.envelope import Envelope


@dataclass(frozen=True)
class TrustInfo:
    """The router's decision, as carried in the delivered message's headers."""

    action: str
    score: float | None
    tier: str
    dimensions: dict[str, float]
    reasons: tuple[str, ...]
    policy_version: int
    trace_id: str
    # Why it is not higher, and what the sender could do (empty for older routers).
    weakest: str = ""
    remediation: str = ""
    # Set on messages the broker itself sends (e.g. an evidence request): its DID.
    from_broker: str = ""

    @classmethod
    def from_headers(cls, headers: dict[str, Any]) -> TrustInfo:
        """Parse x-trust-* headers."""

        def text(name: str) -> str:
            value = headers.get(name, "")
            return value.decode() if isinstance(value, bytes) else str(value)

        score = text("x-trust-score")
        dimensions = text("x-trust-dimensions") or "{}"
        reasons = text("x-trust-reasons")
        return cls(
            action=text("x-trust-action"),
            score=float(score) if score else None,
            tier=text("x-trust-tier"),
            dimensions=orjson.loads(dimensions),
            reasons=tuple(reasons.split(",")) if reasons else (),
            policy_version=int(headers.get("x-trust-policy-version", 0) or 0),
            trace_id=text("x-trust-trace-id"),
            weakest=text("x-trust-weakest"),
            remediation=text("x-trust-remediation"),
            from_broker=text("x-trust-from-broker"),
        )


@dataclass(frozen=True)
class Received:
    """A delivered message: the verified envelope and why the router let it through."""

    envelope: Envelope
    trust: TrustInfo
