"""Presentations: the documents an agent presents, wrapped and signed by that agent.

The broker records a document only when it is about the agent whose presentation carried
it, so the presentation must prove who presents: the agent signs it (RFC 8785 bytes,
Ed25519, like every signed document) for one broker, at one time, under an id the broker
accepts once. Pure code; the negotiation service checks it, the SDK builds it.
"""

from __future__ import annotations

import uuid
from typing import Any

from broker.core.identity import AgentKey, public_key_from_did
from broker.core.signing import sign_document, signed_by
from broker.errors import EvidenceError, IdentityError

PRESENTATION_TYPE = "trust-broker/presentation"
MAX_DOCUMENTS = 16


def make_presentation(
    agent: AgentKey, broker: str, documents: list[dict[str, Any]], *, now_ms: int
) -> dict[str, Any]:
    """Documents wrapped in a presentation signed by the presenting agent, for `broker`."""
    presentation = {
        "type": PRESENTATION_TYPE, "id": f"presentation-{uuid.uuid4().hex}", "agent": agent.did,
        "broker": broker, "created_at": now_ms, "documents": documents,
    }  # fmt: skip
    return sign_document(agent, presentation)


def open_presentation(
    presentation: Any, broker: str, now_ms: int, max_skew_ms: int
) -> tuple[str, str, list[Any]]:
    """Check a presentation: signed by the agent it names, for this broker, fresh.
    Returns (presentation id, presenter DID, documents); the caller makes the id single-use."""
    if not isinstance(presentation, dict) or presentation.get("type") != PRESENTATION_TYPE:
        raise EvidenceError(
            "present needs a presentation signed by the presenting agent",
            code="presentation_unsigned",
        )
    agent, presentation_id, created = (
        presentation.get("agent"),
        presentation.get("id"),
        presentation.get("created_at"),
    )
    if (
        not isinstance(agent, str)
        or not isinstance(presentation_id, str)
        or not (0 < len(presentation_id) <= 128)
        or not (isinstance(created, int) and not isinstance(created, bool))
    ):
        raise EvidenceError(
            "a presentation names its agent, id and created_at", code="presentation_malformed"
        )
    try:
        public_key_from_did(agent)
    except IdentityError as exc:
        raise EvidenceError(str(exc), code="presentation_malformed") from exc
    documents = presentation.get("documents")
    if not isinstance(documents, list) or not 0 < len(documents) <= MAX_DOCUMENTS:
        raise EvidenceError(
            f"a presentation carries 1-{MAX_DOCUMENTS} documents", code="presentation_malformed"
        )
    if presentation.get("broker") != broker:
        raise EvidenceError("presentation is for another broker", code="presentation_wrong_broker")
    if abs(now_ms - created) > max_skew_ms:
        raise EvidenceError("presentation is not fresh", code="presentation_stale")
    if not signed_by(presentation, agent):
        raise EvidenceError(
            "presentation is not signed by its agent", code="presentation_bad_signature"
        )
    return presentation_id, agent, documents
