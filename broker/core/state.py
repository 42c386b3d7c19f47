"""Snapshots the scoring core reads: a peer's state, a recipient's profile, pact terms.

Plain frozen dataclasses: the store builds them from Redis, tests build them by hand. They
hold facts that were verified when the evidence arrived (signatures checked then); the
core re-checks what can change with time (expiry, trust list, revocation) on every message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from broker.core.policy import Retention


class IssuerRole(StrEnum):
    """What the deployment trusts an issuer to sign; evidence of a kind counts only from
    an issuer trusted for its role."""

    IDENTITY = "identity"  # identity credentials (and so who may vouch and report)
    ATTESTATION = "attestation"  # code attestations
    STAKE = "stake"  # bonds and slashes: a custodian of collateral
    FEDERATION = "federation"  # other brokers' trust credentials (imported priors)


@dataclass(frozen=True, slots=True)
class TrustList:
    """The deployment's issuer trust list: issuer DID -> the roles it is trusted for."""

    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # How far the deployment trusts a federation issuer's records, in [0, 1].
    weights: Mapping[str, float] = field(default_factory=dict)

    def trusts(self, did: str, role: IssuerRole) -> bool:
        """True when `did` is on the list for `role`."""
        return role.value in self.roles.get(did, frozenset())

    def weight(self, did: str, default: float) -> float:
        """The trust weight of a federation issuer (`default` when none was set)."""
        return self.weights.get(did, default)

    def __contains__(self, did: object) -> bool:
        return did in self.roles


@dataclass(frozen=True, slots=True)
class DecayedCount:
    """A count that halves every half-life; stored with the instant it was last folded."""

    value: float = 0.0
    as_of_ms: int = 0

    def at(self, now_ms: int, half_life_ms: int) -> float:
        """The decayed value at `now_ms` (never grows when clocks disagree)."""
        elapsed = max(0, now_ms - self.as_of_ms)
        decay: float = 0.5 ** (elapsed / half_life_ms)
        return self.value * decay

    def add(self, amount: float, now_ms: int, half_life_ms: int) -> DecayedCount:
        """Fold the decay up to `now_ms`, then add `amount`."""
        return DecayedCount(self.at(now_ms, half_life_ms) + amount, max(now_ms, self.as_of_ms))


@dataclass(frozen=True, slots=True)
class Credential:
    """An issuer-signed binding of a DID to an organisation (signature verified on receipt)."""

    credential_id: str
    issuer: str
    subject: str
    organisation: str
    issued_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Attestation:
    """An issuer-signed statement of the code and config an agent runs."""

    attestation_id: str
    issuer: str
    subject: str
    codebase_hash: str
    config_hash: str
    issued_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Bond:
    """Collateral a custodian (an issuer trusted for stake) holds for an agent, in minor
    units, less what was slashed since this bond was recorded."""

    bond_id: str
    issuer: str
    amount_minor: int
    currency: str
    issued_at_ms: int
    expires_at_ms: int
    slashed_minor: int = 0

    @property
    def held_minor(self) -> int:
        """What is still at stake."""
        return max(0, self.amount_minor - self.slashed_minor)


@dataclass(frozen=True, slots=True)
class ImportedRecord:
    """A peer's record at another broker (a verified TrustRecordCredential): aggregates
    only, counted as a reputation prior while the peer has no history here."""

    credential_id: str
    issuer: str
    successes: float
    failures: float
    slashes: int
    valid_from_ms: int
    valid_until_ms: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """The message kinds an agent declared it sends (self-declared: it only narrows)."""

    manifest_id: str
    kinds: frozenset[str]
    issued_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Vouch:
    """A peer's signed vouch for another, with the voucher's own standing as of now."""

    voucher: str
    share: float
    expires_at_ms: int
    voucher_successes: DecayedCount = DecayedCount()
    voucher_failures: DecayedCount = DecayedCount()
    voucher_credential: Credential | None = None
    voucher_revoked: bool = False


@dataclass(frozen=True, slots=True)
class PeerState:
    """Everything known about one sender, as of the moment the router read it."""

    did: str
    revoked: bool = False
    possession_verified_ms: int | None = None
    possession_expires_ms: int | None = None
    credential: Credential | None = None
    attestation: Attestation | None = None
    expected_codebase_hash: str | None = None
    successes: DecayedCount = DecayedCount()
    failures: DecayedCount = DecayedCount()
    clean_streak: int = 0
    last_anomaly_ms: int | None = None
    bond: Bond | None = None
    manifest: Manifest | None = None
    # Payments of the last 24 h, all currencies together, in reference minor units.
    spent_24h_ref: int = 0
    # A serious report about one of its payments awaits corroboration or a reviewer: until
    # then its payments are escalated, never delivered automatically.
    payment_hold_until_ms: int | None = None
    vouches: tuple[Vouch, ...] = ()
    # Failures by the kind of message they happened in (per-domain reputation).
    domain_failures: dict[str, DecayedCount] = field(default_factory=dict)
    # Records other brokers issued about this peer (one per issuer), imported as a prior.
    imported: tuple[ImportedRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class RecipientProfile:
    """What a registered recipient accepts; unknown recipients have no profile at all."""

    did: str
    retention: Retention = "ephemeral"
    accepted_kinds: frozenset[str] | None = None
    accepted_data_classes: frozenset[str] | None = None
    requires_pact: bool = False


@dataclass(frozen=True, slots=True)
class PactTerms:
    """The scope two agents agreed for messages from `sender` to `recipient`."""

    pact_id: str
    sender: str
    recipient: str
    kinds: frozenset[str]
    data_classes: frozenset[str]
    max_payment_minor: int
    currency: str | None
    expires_at_ms: int
    monitoring: str = "metadata"


@dataclass(frozen=True, slots=True)
class TrustContext:
    """Everything the router gathered about one message, besides the envelope itself."""

    peer: PeerState
    recipient: RecipientProfile | None
    issuers: TrustList = field(default_factory=TrustList)
    revoked_evidence: frozenset[str] = frozenset()
    pact: PactTerms | None = None
    replayed: bool = False


def organisation_of(credential: Credential | None) -> str | None:
    """Who stands behind an identity: its issuer and the organisation it names. Reports
    are capped, and counterparties counted as independent, per organisation."""
    if credential is None:
        return None
    return f"{credential.issuer}|{credential.organisation}"
