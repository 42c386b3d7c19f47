"""docs/PROTOCOL.md's worked example of portable trust is what the code produces, and
verifies as the document says."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from broker import verify_eddsa_jcs_proof
from broker.core.canonical import canonical_json
from broker.core.statuslist import revoked_in, status_entry
from tests.unit.federation_example import examples

DOC = (Path(__file__).parents[2] / "docs" / "PROTOCOL.md").read_text()
BLOCKS: dict[str, Any] = {
    name: orjson.loads(body)
    for name, body in re.findall(r"<!-- example: ([\w-]+) -->\n```json\n(.*?)\n```", DOC, re.S)
}


@pytest.mark.parametrize("name", sorted(examples()))
def test_the_document_shows_what_the_code_produces(name: str) -> None:
    assert BLOCKS[name] == examples()[name]


def test_the_documented_credentials_verify() -> None:
    record, status = BLOCKS["trust-record"], BLOCKS["status-list"]
    assert verify_eddsa_jcs_proof(record) and verify_eddsa_jcs_proof(status)
    tampered = {**record, "validUntil": "2027-01-01T00:00:00Z"}
    assert not verify_eddsa_jcs_proof(tampered)


def test_the_documented_hashes() -> None:
    record = BLOCKS["trust-record"]
    config = {k: v for k, v in record["proof"].items() if k != "proofValue"}
    unsigned = {k: v for k, v in record.items() if k != "proof"}
    hashes = BLOCKS["trust-record-hashes"]
    assert hashlib.sha256(canonical_json(config)).hexdigest() == hashes["proofConfigHash"]
    assert hashlib.sha256(canonical_json(unsigned)).hexdigest() == hashes["documentHash"]


def test_the_documented_status_list() -> None:
    record, status = BLOCKS["trust-record"], BLOCKS["status-list"]
    assert not revoked_in(record["credentialStatus"], status)
    assert revoked_in(status_entry(status["id"], 3), status)
