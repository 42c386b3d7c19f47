"""Coverage-guided fuzzing (atheris/libFuzzer) of the broker's pure input decoders.

Not part of the suite (atheris is optional: `pip install atheris`). Each input's first
byte picks the target; the rest is the input. Any exception other than the typed errors
from broker/errors.py (and orjson's JSONDecodeError for text that is not JSON, which
callers turn into `malformed`) is a crash, and libFuzzer stops with the input saved.

    mkdir -p .run/fuzz-corpus
    .venv/bin/python scripts/fuzz_atheris.py .run/fuzz-corpus -atheris_runs=1000000 -max_len=4096

An empty corpus directory given first is seeded with one valid input per target (a signed
envelope, handshake response, presentation, credential, manifest, report), so the fuzzer
starts from inputs that pass the parsers and mutates its way into the checks beyond.

docs/SECURITY.md ("The edges") has the last run's command and case counts.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports():
    import orjson

    from broker.core.canonical import loads_strict
    from broker.core.envelope import decode_envelope, encode_envelope, sign_envelope
    from broker.core.evidence import sign_evidence, verify_evidence
    from broker.core.handshake import answer_challenge, check_response, make_challenge
    from broker.core.identity import AgentKey
    from broker.core.presentation import make_presentation, open_presentation
    from broker.core.reports import parse_report
    from broker.errors import TrustBrokerError
    from broker.router.agreements import (
        make_manifest,
        verify_manifest,
        verify_pact,
        verify_rotation,
        verify_vouch,
    )

ALICE, BOB = AgentKey.generate(), AgentKey.generate()
NOW = 1_700_000_000_000
VALID = encode_envelope(
    sign_envelope(
        ALICE, id="msg-fuzz-0001", recipient=BOB.did, kind="data", created_at=NOW,
        nonce=os.urandom(16).hex(), body={"amount": 1},
    )
)  # fmt: skip


def seeds() -> list[bytes]:
    """One valid input per target (the first byte picks it)."""
    challenge = make_challenge(BOB, ALICE.did, os.urandom(32), NOW, 60_000)
    credential = sign_evidence(
        BOB, "credential", id="cred-fuzz-1", subject=ALICE.did, organisation="Acme",
        issued_at=NOW - 1000, expires_at=NOW + 86_400_000,
    )  # fmt: skip
    manifest = make_manifest(ALICE, now_ms=NOW, ttl_ms=86_400_000, kinds=["data"], retention="none")
    documents: list[Any] = [
        VALID, VALID, b'{"a": [1, {"b": 2.5}], "c": "\\u00e9"}',
        answer_challenge(ALICE, challenge, NOW), make_presentation(ALICE, BOB.did, [credential],
        now_ms=NOW), credential, manifest, {"message_id": "msg-fuzz-0001", "outcome": "success"},
    ]  # fmt: skip
    return [
        bytes([i]) + (d if isinstance(d, bytes) else orjson.dumps(d))
        for i, d in enumerate(documents)
    ]


def _document(data: bytes) -> Any:
    try:
        return loads_strict(data)
    except (orjson.JSONDecodeError, TrustBrokerError):
        return None


def _response(data: bytes) -> None:
    document = _document(data)
    if isinstance(document, dict):
        check_response(document, BOB.did, (ALICE.did, NOW + 1), NOW, 60_000)


def _evidence(data: bytes) -> None:
    document = _document(data)
    for kind in ("credential", "attestation", "bond"):
        with contextlib.suppress(TrustBrokerError):
            verify_evidence(document, kind, NOW)  # type: ignore[arg-type]


def _agreements(data: bytes) -> None:
    document = _document(data)
    if isinstance(document, dict):
        for verify in (verify_manifest, verify_pact, verify_rotation, verify_vouch):
            with contextlib.suppress(TrustBrokerError):
                verify(document, NOW)


TARGETS: list[Callable[[bytes], Any]] = [
    decode_envelope,
    lambda data: decode_envelope(VALID[: len(data) % len(VALID)] + data),  # splices
    loads_strict,
    _response,
    lambda data: open_presentation(_document(data), BOB.did, NOW, 300_000),
    _evidence,
    _agreements,
    lambda data: parse_report(_document(data)),
]


def one_input(data: bytes) -> None:
    if not data:
        return
    with contextlib.suppress(TrustBrokerError, orjson.JSONDecodeError):
        TARGETS[data[0] % len(TARGETS)](data[1:])


if __name__ == "__main__":
    corpus = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if corpus is not None and os.path.isdir(corpus) and not os.listdir(corpus):
        for index, seed in enumerate(seeds()):
            with open(os.path.join(corpus, f"seed-{index}"), "wb") as out:
                out.write(seed)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
