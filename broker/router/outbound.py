"""What the router publishes for an outcome: the delivery with its trust headers, or the
record on the blocked stream or the escalation queue (the original bytes kept verbatim).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import aio_pika
import orjson

from broker.amqp.committer import Outbound
from broker.config import Topology
from broker.core.decision import Action
from broker.core.records import Record
from broker.router.pipeline import Outcome

log = logging.getLogger("broker.router")


def outbound(topology: Topology, raw: bytes, outcome: Outcome) -> Outbound:
    """The message that carries the outcome, to publish inside the commit."""
    if outcome.decision.action is Action.DELIVER:
        return delivery(topology, raw, outcome)
    return record(topology, raw, outcome)


def delivery(topology: Topology, raw: bytes, outcome: Outcome) -> Outbound:
    """The delivery to the recipient: exactly the bytes that were verified."""
    assert outcome.envelope is not None
    env = outcome.envelope
    message = aio_pika.Message(
        outcome.wire or raw,  # exactly what was verified, in its RFC 8785 form
        headers=trust_headers(outcome),
        message_id=env.id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    # No queue bound for the recipient: trust.deliver's alternate exchange puts the
    # message on the blocked stream (reported there as `undeliverable`).
    return Outbound(topology.deliver_exchange, env.recipient, message)


def record(topology: Topology, raw: bytes, outcome: Outcome) -> Outbound:
    """A block or escalation record (the original bytes kept verbatim)."""
    action = outcome.decision.action
    exchange = (
        topology.escalations_exchange if action is Action.ESCALATE else topology.blocked_exchange
    )
    message = aio_pika.Message(
        orjson.dumps(outcome_record(raw, outcome)),
        headers=record_headers(outcome),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=outcome.trace_id,
    )
    return Outbound(exchange, "", message)


def log_decision(outcome: Outcome) -> None:
    """The decision as one JSON line at DEBUG (ids and scores, never a body)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    env, decision = outcome.envelope, outcome.decision
    log.debug(
        "%s",
        orjson.dumps(
            {
                "event": "decision",
                "trace_id": outcome.trace_id,
                "message_id": env.id if env else None,
                "sender": env.sender if env else None,
                "recipient": env.recipient if env else None,
                "kind": env.kind if env else None,
                "action": decision.action.value,
                "tier": decision.tier.value,
                "composite": decision.composite,
                "reasons": decision.reasons,
                "policy_version": decision.policy_version,
            }
        ).decode(),
    )


def trust_headers(outcome: Outcome) -> dict[str, Any]:
    """AMQP headers that tell a recipient (or reviewer) why the message went where it did."""
    decision = outcome.decision
    return {
        "x-trust-action": decision.action.value,
        "x-trust-score": "" if decision.composite is None else f"{decision.composite:.4f}",
        "x-trust-tier": decision.tier.value,
        "x-trust-dimensions": orjson.dumps(decision.dimensions).decode(),
        "x-trust-reasons": ",".join(decision.reasons),
        "x-trust-policy-version": decision.policy_version,
        "x-trust-trace-id": outcome.trace_id,
        # What holds the sender back, and what it could do: recipients pass it on.
        "x-trust-weakest": decision.weakest or "",
        "x-trust-remediation": decision.remediation,
    }


def record_headers(outcome: Outcome) -> dict[str, Any]:
    """Headers of a blocked or escalation record: the trust headers plus who and whom."""
    headers = trust_headers(outcome)
    if outcome.envelope is not None:
        headers["x-trust-sender"] = outcome.envelope.sender
        headers["x-trust-recipient"] = outcome.envelope.recipient
    return headers


def outcome_record(raw: bytes, outcome: Outcome) -> Record:
    """The JSON record written to the blocked stream or the escalation queue."""
    env = outcome.envelope
    return {
        "trace_id": outcome.trace_id,
        "received_ms": outcome.received_ms,
        "message_id": env.id if env else None,
        "sender": env.sender if env else None,
        "recipient": env.recipient if env else None,
        "kind": env.kind if env else None,
        "reason": outcome.decision.reasons[0],
        "error_field": outcome.error_field or None,
        "decision": outcome.decision.to_dict(),
        "raw_b64": base64.b64encode(raw).decode("ascii"),
    }
