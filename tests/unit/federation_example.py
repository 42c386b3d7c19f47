"""The worked example of docs/PROTOCOL.md ("Portable trust"): fixed keys, fixed instant.

`python -m tests.unit.federation_example` prints the blocks the document shows;
tests/unit/test_protocol_example.py checks that the document still shows exactly them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from broker.core.canonical import canonical_json
from broker.core.identity import AgentKey
from broker.core.state import DecayedCount, PeerState
from broker.core.statuslist import with_bit
from broker.federation.record import record_subject, status_list_credential, trust_record
from broker.federation.vc import issue_credential

BROKER = AgentKey(bytes(range(32)))
AGENT = AgentKey(bytes(range(32, 64)))
NOW = 1_768_478_400_000  # 2026-01-15T12:00:00Z
DAY_MS = 86_400_000


def examples() -> dict[str, Any]:
    """The signed trust record, its status list (index 3 revoked) and the hashes."""
    peer = PeerState(
        did=AGENT.did,
        possession_verified_ms=NOW - 90 * DAY_MS,
        successes=DecayedCount(48.0, NOW),
        failures=DecayedCount(1.0, NOW),
    )
    subject = record_subject(peer, "standard", NOW, success_half_life_ms=30 * DAY_MS,
                             failure_half_life_ms=90 * DAY_MS)  # fmt: skip
    record_id = "urn:uuid:6f1c3c52-5d0e-4d7a-9a39-2f0e8c1d4b21"
    unsigned = trust_record(BROKER.did, subject, record_id, 7, NOW, 30 * DAY_MS)
    record = issue_credential(BROKER, unsigned, NOW)
    proof_config = {k: v for k, v in record["proof"].items() if k != "proofValue"}
    status = issue_credential(
        BROKER, status_list_credential(BROKER.did, with_bit(b"", 3), NOW, DAY_MS), NOW
    )
    return {
        "trust-record": record,
        "trust-record-hashes": {
            "proofConfigHash": hashlib.sha256(canonical_json(proof_config)).hexdigest(),
            "documentHash": hashlib.sha256(canonical_json(unsigned)).hexdigest(),
        },
        "status-list": status,
        "keys": {"brokerSeedHex": BROKER.seed.hex(), "agentSeedHex": AGENT.seed.hex()},
    }


if __name__ == "__main__":
    for name, value in examples().items():
        print(f"<!-- example: {name} -->\n```json")
        print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
        print("```\n")
