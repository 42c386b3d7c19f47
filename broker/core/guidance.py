"""What a peer can do next to be trusted more, from its standing (pure).

`describe_peer` (broker/peerview.py) says where a peer stands; this module turns that
into the verdict on a message and the next step, naming the command that takes it. The
weakest dimension is not always the step to take: a newcomer's reputation only grows
with time, while a bond may lift it over the next threshold today. So the next step is
the cheapest dimension whose full score would be enough on its own.
"""

from __future__ import annotations

from typing import Any

from broker.reasons import Reason

TIER_ORDER = ("blocked", "probation", "established", "trusted")
PREFERENCE = ("identity", "stake", "compliance", "reputation", "behavioral")
# Which tier a message needs, by the reason the router gave for not delivering it.
NEEDS = {Reason.INSUFFICIENT_TRUST: "probation", Reason.PAYMENT_TRUST_THRESHOLD: "established"}

# Steps per reason code; {key} is the agent's key file. The first reason a dimension
# gives that is listed here decides its step; otherwise the dimension's general step.
_STEPS = {
    "identity_unverified": "prove you hold your key (trust-broker handshake --key {key} "
    "--agent-url URL) and present an identity credential from an issuer ops trusts for "
    "identity (trust-broker present --key {key} --agent-url URL credential.json)",
    "possession_required": "prove you hold your key: trust-broker handshake --key {key} "
    "--agent-url URL",
    "credential_missing": "present an identity credential from an issuer ops trusts for "
    "identity: trust-broker present --key {key} --agent-url URL credential.json",
    "credential_issuer_untrusted": "your credential's issuer is not on the trust list for "
    "identity: ops adds it (trust-broker issuer add ISSUER --role identity), or present one "
    "from an issuer that is",
    "credential_expired": "your credential has expired: present a new one",
    "credential_revoked": "your credential was revoked: present a new one",
    "credential_subject_mismatch": "the credential names another DID: present one issued to you",
    "attestation_missing": "present a code attestation from an issuer ops trusts for "
    "attestation: trust-broker present --key {key} --agent-url URL attestation.json",
    "stake_none": "post a bond: a custodian ops trusts for stake issues one for you, and you "
    "present it (trust-broker present --key {key} --agent-url URL bond.json)",
    "stake_partial": "your bond covers part of the exposure: present a larger one",
    "stake_currency_mismatch": "your bond is in another currency: present one in the "
    "payment's currency",
    "under_observation": "you are under observation after an anomaly: prove your key again "
    "(trust-broker handshake) and keep to your usual traffic; it clears with time",
}
_GENERAL = {
    "identity": "complete identity verification (handshake and an issuer credential)",
    "reputation": "recipients report successful interactions with you (trust-broker report, "
    "run by them); a verified peer may vouch for you (trust-broker vouch --for YOUR_DID)",
    "compliance": "agree a pact with the recipient (trust-broker pact propose --with DID; "
    "they countersign it and either of you presents it)",
    "behavioral": "behaviour is learnt from ordinary traffic over time",
    "stake": "post a bond that covers your payment exposure",
}


def gains(view: dict[str, Any]) -> dict[str, float]:
    """How much composite each dimension could still add: weight x (1 - score)."""
    weights = view["weights"]
    return {
        name: round(weights[name] * (1.0 - float(score)), 6)
        for name, score in view["dimensions"].items()
        if name in weights
    }


def step_for(dimension: str, reasons: list[str], key: str) -> str:
    """The step that raises `dimension`, chosen by the reasons it gave."""
    for reason in reasons:
        if reason in _STEPS:
            return _STEPS[reason].format(key=key)
    return _GENERAL.get(dimension, "see docs/SCORING.md")


def verdict(view: dict[str, Any]) -> str:
    """What the router does with the message the view was computed for."""
    kind = view.get("kind", "data")
    payment = view.get("payment")
    what = (
        f"a payment of {payment['amount']} {payment['currency']} from you"
        if payment
        else f"a {kind} message from you"
    )
    action, reason = view.get("action"), view.get("action_reason")
    if action == "deliver":
        return f"{what} is delivered ({reason})"
    if action == "escalate":
        return f"{what} waits for a human reviewer ({reason})"
    return f"{what} is blocked ({reason})"


def next_step(view: dict[str, Any], *, key: str = "KEY") -> str:
    """The one thing to do next, with the command that does it."""
    if view.get("tier") == "revoked":
        return "this key is revoked: nothing it sends is delivered; a new key starts afresh"
    target = _target(view)
    if target is None:
        if view.get("action") == "escalate":
            return "a reviewer decides it (trust-broker escalations); a higher tier raises the caps"
        return "none needed"
    needed = max(0.0, float(view["thresholds"][target]) - float(view["composite"]))
    can_add = gains(view)
    enough = [name for name, gain in can_add.items() if gain >= needed - 1e-9]
    # The smallest dimension that alone is enough; else the biggest, to start with. Ties
    # go to evidence a third party can vouch for today over what takes time.
    order = {name: rank for rank, name in enumerate(PREFERENCE)}
    if enough:
        choice = min(enough, key=lambda name: (can_add[name], order.get(name, 9)))
    else:
        choice = max(can_add, key=lambda name: (can_add[name], -order.get(name, 9)))
    step = step_for(choice, list(view["reasons"].get(choice, [])), key)
    alone = "" if enough else " (not enough on its own)"
    return (
        f"to reach {target} ({view['thresholds'][target]:.2f}, +{needed:.4f}): {choice} can "
        f"add up to {can_add[choice]:.4f}{alone}: {step}"
    )


def _target(view: dict[str, Any]) -> str | None:
    """The tier the message needs, when the peer is below it; None when it is delivered
    at a tier that needs no step."""
    reason = view.get("action_reason")
    if reason in NEEDS:
        return NEEDS[reason]
    if view.get("action") == "deliver" and view.get("tier") == "probation":
        return "established"  # delivered, marked probation; payments need established
    return None
