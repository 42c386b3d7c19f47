"""The router: every inbound inter-agent message is decided and ends in exactly one place
(the recipient's queue, the blocked stream or the escalation queue) before any agent sees it.

- `service`: the Router (consume -> decide -> publish and ack in one commit -> record);
- `sessions`: one connection and one consuming channel at a time, replaced whole on failure;
- `lanes`: what a session consumes (the shared ingress and one lane per agent);
- `retries`: whether a redelivered message may be routed while its holder's session lives;
- `outbound`: what is published for an outcome (delivery headers, blocked/escalation records).
"""

from broker.router.outbound import outcome_record, record_headers, trust_headers
from broker.router.pipeline import Outcome, reserve_payment
from broker.router.service import Router, Sweeper

__all__ = ["Outcome", "Router", "Sweeper", "outcome_record", "record_headers",
           "reserve_payment", "trust_headers"]  # fmt: skip
