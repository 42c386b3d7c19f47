"""Presentations bind documents to the agent presenting them (pure checks)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.core.identity import AgentKey
from broker.core.presentation import make_presentation, open_presentation
from broker.core.signing import sign_document
from broker.errors import EvidenceError

from .factories import NOW, OTHER, SENDER

BROKER = AgentKey(bytes([7]) * 32).did
SKEW = 300_000
DOCUMENT = {"type": "trust-broker/manifest", "agent": SENDER.did}


def presentation(**changes: Any) -> dict[str, Any]:
    signed = make_presentation(SENDER, BROKER, [DOCUMENT], now_ms=NOW)
    return {**signed, **changes}


def resigned(**changes: Any) -> dict[str, Any]:
    """A presentation changed and then signed again by SENDER (a valid signature)."""
    unsigned = {k: v for k, v in presentation().items() if k != "signature"}
    return sign_document(SENDER, {**unsigned, **changes})


def test_an_untampered_presentation_names_its_presenter_and_documents() -> None:
    signed = presentation()
    assert open_presentation(signed, BROKER, NOW, SKEW) == (signed["id"], SENDER.did, [DOCUMENT])


CASES = [
    pytest.param(None, "presentation_unsigned", id="absent"),
    pytest.param({"op": "present", "documents": [DOCUMENT]}, "presentation_unsigned",
                 id="bare-documents-naming-nobody"),
    pytest.param(presentation(agent=OTHER.did), "presentation_bad_signature",
                 id="claims-another-presenter"),
    pytest.param(presentation(documents=[DOCUMENT, DOCUMENT]), "presentation_bad_signature",
                 id="documents-added-after-signing"),
    pytest.param(presentation(created_at=NOW + 1), "presentation_bad_signature",
                 id="time-changed-after-signing"),
    pytest.param(resigned(broker=OTHER.did), "presentation_wrong_broker", id="for-another-broker"),
    pytest.param(resigned(created_at=NOW - SKEW - 1), "presentation_stale", id="too-old"),
    pytest.param(resigned(created_at=NOW + SKEW + 1), "presentation_stale", id="from-the-future"),
    pytest.param(resigned(documents=[]), "presentation_malformed", id="no-documents"),
    pytest.param(resigned(documents=[DOCUMENT] * 17), "presentation_malformed", id="too-many"),
    pytest.param(resigned(id="x" * 129), "presentation_malformed", id="id-too-long"),
    pytest.param(resigned(agent="did:key:nonsense"), "presentation_malformed", id="bad-did"),
    pytest.param(resigned(created_at=True), "presentation_malformed", id="bool-time"),
]  # fmt: skip


@pytest.mark.parametrize(("candidate", "code"), CASES)
def test_a_bad_presentation_is_refused_with_its_reason(candidate: Any, code: str) -> None:
    with pytest.raises(EvidenceError) as error:
        open_presentation(candidate, BROKER, NOW, SKEW)
    assert error.value.code == code
