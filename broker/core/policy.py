"""The routing policy: weights, tier thresholds, payment caps, gate settings and scoring
constants in one validated, versioned object. A bad policy is refused, never repaired."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.core.currency import is_currency
from broker.errors import PolicyError

DIMENSIONS = ("identity", "reputation", "compliance", "behavioral", "stake")
Retention = Literal["ephemeral", "temporary", "permanent"]
RETENTION_ORDER: dict[str, int] = {"ephemeral": 0, "temporary": 1, "permanent": 2}

DEFAULT_MAX_RETENTION: dict[str, Retention] = {
    "payment_card": "ephemeral",
    "credentials": "ephemeral",
    "biometric": "ephemeral",
    "health": "temporary",
    "national_id": "temporary",
    "pii": "temporary",
    "financial_account": "temporary",
}

_FROZEN = ConfigDict(frozen=True, extra="forbid", strict=True)
Unit = Field(ge=0.0, le=1.0)


class Weights(BaseModel):
    """How much each dimension counts in the composite; non-negative, summing to 1."""

    model_config = _FROZEN
    identity: float = Field(0.30, ge=0.0)
    reputation: float = Field(0.25, ge=0.0)
    compliance: float = Field(0.20, ge=0.0)
    behavioral: float = Field(0.15, ge=0.0)
    stake: float = Field(0.10, ge=0.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> Weights:
        total = math.fsum(getattr(self, name) for name in DIMENSIONS)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"weights must sum to 1 (within 1e-9); these sum to {total!r}")
        return self

    def as_dict(self) -> dict[str, float]:
        """Weights keyed by dimension name."""
        return {name: getattr(self, name) for name in DIMENSIONS}


class Thresholds(BaseModel):
    """Composite score at which each tier starts (blocked below `probation`)."""

    model_config = _FROZEN
    probation: float = Field(0.50, ge=0.0, le=1.0)
    established: float = Field(0.60, ge=0.0, le=1.0)
    trusted: float = Field(0.80, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.probation < self.established < self.trusted:
            raise ValueError("thresholds must rise strictly: probation < established < trusted")
        return self


class PaymentCaps(BaseModel):
    """Per-message and rolling 24 h caps, in major units of the reference currency; the
    daily cap counts every currency together."""

    model_config = _FROZEN
    established_per_message: int = Field(100, ge=0)
    established_per_day: int = Field(500, ge=0)
    trusted_per_message: int = Field(10_000, ge=0)
    trusted_per_day: int = Field(50_000, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> PaymentCaps:
        for tier in ("established", "trusted"):
            if getattr(self, f"{tier}_per_message") > getattr(self, f"{tier}_per_day"):
                raise ValueError(f"{tier}_per_message cap cannot exceed {tier}_per_day")
        if self.established_per_message > self.trusted_per_message:
            raise ValueError("the established tier cannot have a higher cap than trusted")
        return self


class CurrencyModel(BaseModel):
    """The unit money is judged in: caps, the daily sum and stake coverage are in the
    `reference` currency; `rates` give the worth of one major unit of each currency in
    reference major units, as decimal strings that ops set. A payment in a currency
    without a rate is escalated, never delivered under a cap."""

    model_config = _FROZEN
    reference: str = "USD"
    rates: dict[str, str] = Field(default_factory=lambda: {"USD": "1"})

    @model_validator(mode="after")
    def _valid_rates(self) -> CurrencyModel:
        if not is_currency(self.reference):
            raise ValueError(f"reference {self.reference!r} is not an ISO 4217 currency")
        for code, text in self.rates.items():
            if not is_currency(code):
                raise ValueError(f"rates: {code!r} is not an ISO 4217 currency")
            try:
                rate = Decimal(text)
            except InvalidOperation:
                raise ValueError(f"rates.{code}: {text!r} is not a decimal number") from None
            if not rate.is_finite() or rate <= 0 or len(text) > 24:
                raise ValueError(f"rates.{code}: must be a positive decimal string")
        if Decimal(self.rates.get(self.reference, "0")) != 1:
            raise ValueError(f"rates.{self.reference}: the reference currency's rate must be 1")
        return self

    def rate(self, currency: str) -> Decimal | None:
        """Reference major units per major unit of `currency`, or None without a rate."""
        text = self.rates.get(currency)
        return None if text is None else Decimal(text)


class Gates(BaseModel):
    """Hard-gate settings."""

    model_config = _FROZEN
    max_clock_skew_ms: int = Field(300_000, gt=0, le=3_600_000)
    max_envelope_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024)
    # The most permissive retention each sensitive data class may be sent to. Classes not
    # listed are unrestricted by retention (the recipient's accepted classes still apply).
    max_retention: dict[str, Retention] = Field(default_factory=lambda: dict(DEFAULT_MAX_RETENTION))


class IdentityLevels(BaseModel):
    """Identity dimension score at each evidence level."""

    model_config = _FROZEN
    unverified: float = Field(0.20, ge=0.0, le=1.0)
    possession: float = Field(0.40, ge=0.0, le=1.0)
    verified: float = Field(0.90, ge=0.0, le=1.0)
    attested: float = Field(1.00, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> IdentityLevels:
        if not self.unverified <= self.possession <= self.verified <= self.attested:
            raise ValueError("identity levels must not fall as evidence grows")
        return self


class ReputationModel(BaseModel):
    """R = (prior + (ceiling - prior) * s / (s + h)) * failure_multiplier ** (f / (1 + s / h)),
    h = half_saturation."""

    model_config = _FROZEN
    prior: float = Field(0.25, ge=0.0, le=1.0)
    ceiling: float = Field(0.90, ge=0.0, le=1.0)
    half_saturation: float = Field(11.0, gt=0.0)
    failure_multiplier: float = Field(0.85, gt=0.0, le=1.0)
    success_half_life_ms: int = Field(30 * 86_400_000, gt=0)
    failure_half_life_ms: int = Field(90 * 86_400_000, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ReputationModel:
        if self.prior > self.ceiling:
            raise ValueError("reputation prior cannot exceed its ceiling")
        return self


class BehaviorModel(BaseModel):
    """B = 1 - (1 - prior) * exp(-clean / baseline_messages); 0 while under observation.

    The detectors below (broker/core/behavior.py) put a sender under observation; they
    judge, on every message, the sender's windows as Redis counts them, so every router
    sees the same sender.
    """

    model_config = _FROZEN
    prior: float = Field(0.50, ge=0.0, le=1.0)
    baseline_messages: float = Field(5.0, gt=0.0)
    observation_ms: int = Field(86_400_000, ge=0)
    observation_clean_messages: int = Field(20, ge=0)
    # Velocity: messages in the current minute against the sender's own per-minute EWMA.
    rate_floor_per_minute: int = Field(120, ge=1)
    rate_spike_factor: float = Field(5.0, gt=1.0)
    baseline_minutes: int = Field(3, ge=1)
    # Fan-out: recipients never messaged before, per hour.
    new_recipients_per_hour: int = Field(25, ge=1)
    # Payload drift: a message far larger than the sender's usual size.
    size_factor: float = Field(10.0, gt=1.0)
    size_floor_bytes: int = Field(16_384, ge=0)
    size_baseline_messages: int = Field(10, ge=1)
    # Repeated gate failures and messages outside the sender's own manifest, per window.
    gate_failure_limit: int = Field(5, ge=1)
    outside_manifest_limit: int = Field(3, ge=1)
    window_ms: int = Field(600_000, gt=0)


class ComplianceLevels(BaseModel):
    """Compliance dimension score by the evidence about the sender's conduct.

    A manifest is self-declared: it may narrow what a peer may do, never raise its score,
    so `manifest` cannot exceed `no_evidence`. A pact is the recipient's own signed
    consent, which is why it may raise compliance for messages to that recipient."""

    model_config = _FROZEN
    violation: float = Field(0.0, ge=0.0, le=1.0)
    outside_manifest: float = Field(0.20, ge=0.0, le=1.0)
    no_evidence: float = Field(0.50, ge=0.0, le=1.0)
    manifest: float = Field(0.50, ge=0.0, le=1.0)
    pact: float = Field(1.00, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _self_declared_never_raises(self) -> ComplianceLevels:
        if self.manifest > self.no_evidence:
            raise ValueError(
                "compliance.manifest cannot exceed no_evidence: a self-declared "
                "manifest never raises a score"
            )
        return self


class ReportModel(BaseModel):
    """Outcome reports: who may move a peer's reputation, and by how much.

    A reporter's weight comes from its own non-report evidence only (its *standing*:
    issuer-verified identity, behaviour and stake), never from the reputation that
    reports gave it, so a ring cannot raise its own voice. Reporters without a valid
    issuer-verified identity, or under observation, count for nothing. Praise and blame
    are both capped per counterparty organisation (issuer + organisation of the
    reporter's identity credential)."""

    model_config = _FROZEN
    window_ms: int = Field(86_400_000, gt=0)
    # Failure units per report; each unit multiplies reputation by failure_multiplier.
    severity_units: dict[str, float] = Field(
        default_factory=lambda: {"low": 1.0, "medium": 2.0, "high": 4.0, "critical": 8.0}
    )
    # Reporters whose standing is below `reporter_floor` count for nothing; at
    # `reporter_full` and above they count fully; linear in between.
    reporter_floor: float = Field(0.50, ge=0.0, le=1.0)
    reporter_full: float = Field(0.80, ge=0.0, le=1.0)
    # Most success weight one counterparty organisation can add to one peer (decays like
    # successes), and most failure units it can take away (decays like failures).
    pair_success_cap: float = Field(3.0, gt=0.0)
    pair_failure_cap: float = Field(3.0, gt=0.0)
    # A high or critical report puts its subject under observation (and a critical one
    # slashes its bond) only when this many independent organisations reported such
    # misbehaviour within `corroboration_window_ms`, or a security reviewer confirms it.
    corroboration: int = Field(2, ge=1)
    corroboration_window_ms: int = Field(7 * 86_400_000, gt=0)
    # Serious reports one reporter may have waiting for review at once.
    max_open_reviews_per_reporter: int = Field(20, ge=1)
    # Once a serious report about a payment is verified (corroborated or confirmed), the
    # sender's payments wait for a human this long: its observation ends sooner.
    verified_payment_hold_ms: int = Field(30 * 86_400_000, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> ReportModel:
        if self.reporter_floor >= self.reporter_full:
            raise ValueError("reporter_floor must be below reporter_full")
        if set(self.severity_units) != {"low", "medium", "high", "critical"}:
            raise ValueError("severity_units needs exactly low, medium, high, critical")
        return self


class VouchModel(BaseModel):
    """Vouching: a trusted peer lends a bounded share of its own earned reputation."""

    model_config = _FROZEN
    max_share: float = Field(0.5, ge=0.0, le=1.0)
    max_boost: float = Field(0.15, ge=0.0, le=1.0)
    # Only vouchers whose own (unvouched) reputation reaches this can lend anything.
    min_voucher_reputation: float = Field(0.60, ge=0.0, le=1.0)
    # What a voucher pays, in failure units per failure unit of its vouchee, times share.
    liability: float = Field(1.0, ge=0.0)


class FederationModel(BaseModel):
    """Trust records other brokers issued (TrustRecordCredential): how much a first-time
    peer's imported record may count here, and what this broker issues itself."""

    model_config = _FROZEN
    # No imported record lifts reputation above this, whoever issued it and however good.
    ceiling: float = Field(0.55, ge=0.0, le=1.0)
    # An issuer on the federation list without its own trust weight gets this one.
    default_trust: float = Field(0.5, ge=0.0, le=1.0)
    # An imported record counts half as much after this long (from its validFrom).
    age_half_life_ms: int = Field(30 * 86_400_000, gt=0)
    # Local outcomes that weigh as much as the imported prior: after this many verified
    # outcomes here the prior counts half, and ever less after that.
    local_weight: float = Field(5.0, gt=0.0)
    # Failure units a slash in the exported record counts for.
    slash_failure_units: float = Field(3.0, ge=0.0)
    # What this broker issues: how long its trust credentials and status lists are valid.
    credential_validity_ms: int = Field(30 * 86_400_000, gt=0)
    status_list_validity_ms: int = Field(86_400_000, gt=0)


class EscalationModel(BaseModel):
    """How long an escalated message waits for a human before it expires to blocked."""

    model_config = _FROZEN
    expire_after_ms: int = Field(3_600_000, ge=60_000)


class StakeModel(BaseModel):
    """Stake = bond / max(full_coverage, exposure), capped at 1 (reference major units)."""

    model_config = _FROZEN
    full_coverage: int = Field(1_000, gt=0)
    # Share of the bond a verified critical report (hallucination or policy violation)
    # slashes automatically (condition data_manipulation).
    critical_report_slash: float = Field(0.25, ge=0.0, le=1.0)


class Policy(BaseModel):
    """Everything ops can tune, validated as a whole. `version` is assigned by the store."""

    model_config = _FROZEN
    version: int = Field(1, ge=1)
    weights: Weights = Field(default_factory=Weights)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    caps: PaymentCaps = Field(default_factory=PaymentCaps)
    currency: CurrencyModel = Field(default_factory=CurrencyModel)
    gates: Gates = Field(default_factory=Gates)
    identity: IdentityLevels = Field(default_factory=IdentityLevels)
    reputation: ReputationModel = Field(default_factory=ReputationModel)
    behavior: BehaviorModel = Field(default_factory=BehaviorModel)
    compliance: ComplianceLevels = Field(default_factory=ComplianceLevels)
    stake: StakeModel = Field(default_factory=StakeModel)
    reports: ReportModel = Field(default_factory=ReportModel)
    vouching: VouchModel = Field(default_factory=VouchModel)
    escalations: EscalationModel = Field(default_factory=EscalationModel)
    federation: FederationModel = Field(default_factory=FederationModel)


def load_policy(data: dict[str, Any]) -> Policy:
    """Validate a policy from plain JSON data; raise PolicyError listing every problem."""
    try:
        return Policy.model_validate(data, strict=False)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise PolicyError(f"policy refused: {problems}") from None
