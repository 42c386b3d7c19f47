"""Every Redis key and channel name the broker uses, in one place."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix, so deployments (and tests) never collide."""

    prefix: str = "tb:"

    def peer(self, did: str) -> str:
        """Hash of one sender's state (evidence, reputation, behaviour, stake)."""
        return f"{self.prefix}peer:{did}"

    def recipient(self, did: str) -> str:
        """Hash of a registered recipient's profile; absent means unknown recipient."""
        return f"{self.prefix}recipient:{did}"

    @property
    def lanes(self) -> str:
        """Set of the DIDs whose ingress lane exists (provisioned agents): the routers
        consume each one's trust.lane.<DID>."""
        return f"{self.prefix}lanes"

    def seen(self, message_id: str) -> str:
        """Claim on a message id: '<digest>|<state>' with a TTL (dedup and replay)."""
        return f"{self.prefix}seen:{message_id}"

    def delivered(self, message_id: str) -> str:
        """'<sender>|<recipient>|<ms>' of a delivered message, for the report window."""
        return f"{self.prefix}delivered:{message_id}"

    def reported(self, message_id: str) -> str:
        """Set once a delivered message's outcome has been reported."""
        return f"{self.prefix}reported:{message_id}"

    def report_pairs(self, subject: str) -> str:
        """Hash organisation -> 'weight,ms': success weight each counterparty organisation
        has given subject (capped by reports.pair_success_cap)."""
        return f"{self.prefix}report-pairs:{subject}"

    def report_blame(self, subject: str) -> str:
        """Hash organisation -> 'units,ms': failure units each counterparty organisation
        has taken from subject (capped by reports.pair_failure_cap)."""
        return f"{self.prefix}report-blame:{subject}"

    def serious_orgs(self, subject: str) -> str:
        """Hash organisation -> ms of its latest high or critical report about subject
        (corroboration), plus '_acted' -> ms the corroborated penalty was last applied."""
        return f"{self.prefix}serious-orgs:{subject}"

    @property
    def serious_reports(self) -> str:
        """Hash item id -> JSON of a high or critical report waiting for corroboration or
        a security reviewer."""
        return f"{self.prefix}serious-reports"

    @property
    def serious_open(self) -> str:
        """Sorted set of open serious-report item ids by the time they were filed."""
        return f"{self.prefix}serious-open"

    @property
    def serious_by_pair(self) -> str:
        """Hash 'organisation|subject' -> id of the open item that organisation's serious
        reports about that subject are folded into (one open item per pair)."""
        return f"{self.prefix}serious-by-pair"

    @property
    def serious_by_reporter(self) -> str:
        """Hash reporter -> number of its serious reports still open (bounded)."""
        return f"{self.prefix}serious-by-reporter"

    def vouches(self, vouchee: str) -> str:
        """Hash voucher -> vouch JSON for a vouchee."""
        return f"{self.prefix}vouches:{vouchee}"

    def vouchees(self, voucher: str) -> str:
        """Set of DIDs a voucher vouches for (to bill it when they are slashed)."""
        return f"{self.prefix}vouchees:{voucher}"

    def known_recipients(self, sender: str) -> str:
        """Set of recipients a sender has messaged (fan-out detection)."""
        return f"{self.prefix}recipients-of:{sender}"

    def nonce(self, sender: str, nonce: str) -> str:
        """A sender's used nonce, kept for the replay window."""
        return f"{self.prefix}nonce:{sender}:{nonce}"

    def spend(self, did: str) -> str:
        """Sorted set of a sender's payments in the last 24 h, every currency together in
        reference minor units (score = time in ms, member '<message id>:<amount>')."""
        return f"{self.prefix}spend-ref:{did}"

    def pact(self, sender: str, recipient: str) -> str:
        """The active pact for messages from sender to recipient."""
        return f"{self.prefix}pact:{sender}:{recipient}"

    def challenge(self, challenge: str) -> str:
        """A pending handshake challenge: '<agent>|<expires_ms>' until answered or expired."""
        return f"{self.prefix}challenge:{challenge}"

    @property
    def challenges(self) -> str:
        """Sorted set of pending challenges by expiry, which bounds how many can pile up."""
        return f"{self.prefix}challenges"

    def challenges_of(self, bucket: str) -> str:
        """Sorted set of one agent's pending challenges by expiry (the per-agent bound).
        `bucket` is the validated AMQP login; hashed, so no login shapes a key name."""
        return f"{self.prefix}challenges-of:{hashlib.sha256(bucket.encode()).hexdigest()[:32]}"

    @property
    def issuers(self) -> str:
        """Hash issuer DID -> JSON list of the roles it is trusted for (the trust list)."""
        return f"{self.prefix}issuer-roles"

    @property
    def issuer_trust(self) -> str:
        """Hash issuer DID -> trust weight in [0, 1] of a federation issuer."""
        return f"{self.prefix}issuer-trust"

    @property
    def fed_status(self) -> str:
        """String: this broker's revocation bitstring (bit i = credential i revoked)."""
        return f"{self.prefix}fed:status-bits"

    @property
    def fed_issued(self) -> str:
        """Hash credential id -> status list index of every trust credential issued here,
        plus '_next' -> the next free index."""
        return f"{self.prefix}fed:issued"

    @property
    def fed_lists(self) -> str:
        """Hash '<issuer>|<list id>' -> JSON of other brokers' verified status lists."""
        return f"{self.prefix}fed:lists"

    def fed_entries(self, issuer_list: str) -> str:
        """Hash credential id -> index of the imported records one status list covers
        ('<issuer>|<list id>')."""
        return f"{self.prefix}fed:entries:{issuer_list}"

    @property
    def revoked_evidence(self) -> str:
        """Set of revoked evidence ids (credentials, attestations, bonds)."""
        return f"{self.prefix}revoked-evidence"

    @property
    def evidence_ids(self) -> str:
        """Hash evidence id -> '<kind>|<subject>' of every issuer-signed document recorded
        (so `revoke evidence` can refuse an id nobody ever presented)."""
        return f"{self.prefix}evidence-ids"

    def presentation(self, presentation_id: str) -> str:
        """A used presentation id, kept while a replay of it could still be fresh."""
        return f"{self.prefix}presentation:{presentation_id}"

    @property
    def policy(self) -> str:
        """The current policy as JSON."""
        return f"{self.prefix}policy"

    @property
    def policy_history(self) -> str:
        """List of policy versions, newest first (who, when, why, content)."""
        return f"{self.prefix}policy-history"

    @property
    def decisions(self) -> str:
        """Stream of recent decisions with their inputs (what-if replays read it)."""
        return f"{self.prefix}decisions"

    @property
    def in_doubt(self) -> str:
        """Stream of outcomes whose commit got no commit-ok after tx.commit was sent
        (broker/store/indoubt.py)."""
        return f"{self.prefix}in-doubt"

    def trace(self, trace_id: str) -> str:
        """The flight-recorder entry of one decision."""
        return f"{self.prefix}trace:{trace_id}"

    def trace_events(self, trace_id: str) -> str:
        """Later events of one decision (reports, releases, approvals), in order."""
        return f"{self.prefix}trace-events:{trace_id}"

    def trace_of(self, message_id: str) -> str:
        """Trace id of the decision on a message id."""
        return f"{self.prefix}trace-of:{message_id}"

    @property
    def invalidate(self) -> str:
        """Pub/sub channel telling every router to drop cached entries."""
        return f"{self.prefix}invalidate"

    # -- review of blocked messages and escalations -------------------------------------

    def review(self, trace_id: str) -> str:
        """The one final review decision on a trace (release, confirm, approve, reject,
        expire, rescore) as JSON; written with SET NX, so a decision happens once."""
        return f"{self.prefix}review:{trace_id}"

    def review_log(self, trace_id: str) -> str:
        """List of every review action on a trace, refused attempts included (audit)."""
        return f"{self.prefix}review-log:{trace_id}"

    @property
    def awaiting_evidence(self) -> str:
        """Hash trace id -> evidence request JSON: escalations re-scored on every sweep."""
        return f"{self.prefix}awaiting-evidence"

    def blocked_offset(self, trace_id: str) -> str:
        """Offset of a trace's record on the blocked stream, as a reader last found it."""
        return f"{self.prefix}blocked-offset:{trace_id}"

    def lock(self, name: str) -> str:
        """A short-lived lock, e.g. so only one router sweeps escalations per interval."""
        return f"{self.prefix}lock:{name}"
