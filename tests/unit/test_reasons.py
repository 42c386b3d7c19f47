"""The reason codes: one table (broker/reasons.py) that the gates, tiers, review rules,
CLI and documentation all agree with."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import NoneType

import orjson
import pytest

from broker.cli.blocked import _known_reason
from broker.core.decision import Action, Decision, Tier
from broker.core.plan import ReserveSpend
from broker.core.policy import Policy
from broker.core.reports import REFUSALS
from broker.core.scoring import blocked, decide, reject_undecodable
from broker.core.scoring.tiers import route_inputs
from broker.errors import ConfigError, EnvelopeError
from broker.ops.rules import UNPENALISABLE, UNRELEASABLE, overridden, set_aside
from broker.reasons import BLOCK_REASONS, ESCALATION_REASONS, Reason, known, reasons_for
from tests.unit.factories import NOW, context, decoded, established_peer, new_peer, sign_envelope

ROOT = Path(__file__).resolve().parents[2]


def _codes(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


def test_the_readme_lists_every_block_and_escalation_reason_and_no_other() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Reason codes:")
    end = readme.index("\n\n", start)
    block_part, _, escalate_part = readme[start:end].partition("Escalations are")
    assert _codes(block_part) == set(BLOCK_REASONS)
    assert _codes(escalate_part) == set(ESCALATION_REASONS)


def test_the_scoring_doc_lists_the_gates_in_the_order_they_are_checked() -> None:
    scoring = (ROOT / "docs" / "SCORING.md").read_text()
    section = scoring[scoring.index("## 1. Hard gates") : scoring.index("## 2. Dimensions")]
    listed = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)
    gates = [
        Reason.MALFORMED, Reason.OVERSIZED, Reason.BAD_SIGNATURE, Reason.REVOKED_KEY,
        Reason.CLOCK_SKEW, Reason.EXPIRED, Reason.REPLAY, Reason.UNKNOWN_RECIPIENT,
        Reason.PRIVACY_VIOLATION, Reason.PACT_VIOLATION,
    ]  # fmt: skip
    assert listed == gates
    for reason in gates:
        assert reason.action == "block"


@pytest.mark.parametrize(
    ("reason", "releasable", "penalisable"),
    [
        (Reason.REPLAY, False, False),
        (Reason.REVOKED_KEY, False, True),
        (Reason.UNPARSEABLE, False, False),
        (Reason.BAD_SIGNATURE, True, True),
        (Reason.INSUFFICIENT_TRUST, True, True),
        (Reason.INTERNAL_ERROR, True, True),
        (Reason.ESCALATION_EXPIRED, True, True),
    ],
)
def test_what_a_reviewer_may_do_with_a_block_follows_its_reason(
    reason: Reason, releasable: bool, penalisable: bool
) -> None:
    assert reason.releasable is releasable
    assert reason.penalisable is penalisable
    assert (reason in UNRELEASABLE) is not releasable
    assert (reason in UNPENALISABLE) is not penalisable
    # The rules are looked up by the plain code a record carries.
    assert (str(reason.value) in UNRELEASABLE) is not releasable


def test_every_reason_says_what_it_means_and_what_to_do() -> None:
    for reason in Reason:
        assert reason.action in ("deliver", "block", "escalate"), reason
        assert reason.explanation and reason.remediation, reason
    assert set(reasons_for("block")) | set(reasons_for("escalate")) | set(
        reasons_for("deliver")
    ) == set(Reason)


def test_a_reason_is_its_code_in_records_and_json() -> None:
    import orjson

    assert "clock_skew" in {Reason.CLOCK_SKEW} and str(Reason.CLOCK_SKEW) == "clock_skew"
    assert orjson.loads(orjson.dumps({"reason": Reason.CLOCK_SKEW})) == {"reason": "clock_skew"}
    assert f"{Reason.REPLAY}" == "replay"
    assert known("replay") is Reason.REPLAY
    assert known("no_such_reason") is None
    assert known(None) is None


def test_report_refusals_are_the_report_reasons() -> None:
    assert set(REFUSALS) == {r for r in BLOCK_REASONS if r.startswith("report_")} - {
        Reason.REPORT_MALFORMED
    }
    for reason, text in REFUSALS.items():
        assert text == Reason(reason).explanation


@pytest.mark.parametrize(
    ("tier", "payment", "amount", "action", "reason"),
    [
        (Tier.BLOCKED, False, None, Action.BLOCK, Reason.INSUFFICIENT_TRUST),
        (Tier.PROBATION, False, None, Action.DELIVER, Reason.PROBATION),
        (Tier.ESTABLISHED, False, None, Action.DELIVER, Reason.TRUST_SUFFICIENT),
        (Tier.PROBATION, True, 100, Action.BLOCK, Reason.PAYMENT_TRUST_THRESHOLD),
        (Tier.ESTABLISHED, True, None, Action.ESCALATE, Reason.PAYMENT_AMOUNT_MISSING),
        (Tier.ESTABLISHED, True, 100, Action.DELIVER, Reason.PAYMENT_WITHIN_CAPS),
    ],
)
def test_every_route_reason_goes_with_its_action(
    tier: Tier, payment: bool, amount: int | None, action: Action, reason: Reason
) -> None:
    got = route_inputs(
        tier, is_payment=payment, has_amount=amount is not None, amount_ref_minor=amount,
        spent_ref_minor=0, policy=Policy(),
    )  # fmt: skip
    assert got == (action, reason)
    assert reason.action == action.value


@pytest.mark.parametrize("code", [r.value for r in BLOCK_REASONS])
def test_the_cli_filters_the_blocked_stream_by_every_block_reason(code: str) -> None:
    # verified_identity_required was refused here while a hand-kept list lacked it.
    assert _known_reason(code) == code


def test_the_cli_refuses_an_unknown_reason_with_the_nearest_code() -> None:
    with pytest.raises(ConfigError, match="did you mean clock_skew"):
        _known_reason("clok_skew")


def test_an_unparseable_record_encodes_as_json() -> None:
    # orjson takes only exact str as object keys: a Reason there would fail every
    # `--json` reader of such a record.
    from broker.core.records import parse_record

    record = parse_record(b"not json", {})
    assert orjson.loads(orjson.dumps(record))["unparseable"] == "it is not JSON"


def _plain(decision: Decision) -> bool:
    return all(type(r) is str for r in decision.reasons) and type(decision.gate) in (str, NoneType)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: decide(decoded(sign_envelope()), context(established_peer()),
                                    Policy(), NOW), id="delivered"),
        pytest.param(lambda: decide(decoded(sign_envelope()), context(new_peer()), Policy(), NOW),
                     id="insufficient-trust"),
        pytest.param(lambda: decide(decoded(sign_envelope(created_at=NOW - 10**9)),
                                    context(established_peer()), Policy(), NOW), id="gate"),
        pytest.param(lambda: blocked(Reason.REPLAY, "again", Policy()), id="blocked"),
        pytest.param(lambda: reject_undecodable(EnvelopeError("big", code=Reason.OVERSIZED),
                                                Policy()), id="undecodable"),
        pytest.param(lambda: ReserveSpend("s", "m", 1, 1).settle(
            decide(decoded(sign_envelope()), context(established_peer()), Policy(), NOW),
            Reason.DAILY_CAP_EXCEEDED, Policy()), id="over-the-cap"),
        pytest.param(lambda: set_aside(blocked("x", "y", Policy()), Reason.ESCALATION_EXPIRED,
                                       "r"), id="set-aside"),
        pytest.param(lambda: overridden(blocked("x", "y", Policy()), Reason.PROBATION),
                     id="overridden"),
    ],
)  # fmt: skip
def test_every_decision_carries_its_reason_codes_as_plain_text(
    make: Callable[[], Decision],
) -> None:
    decision = make()
    assert _plain(decision), decision.reasons
    # Callers count decisions by reason and encode the counts (bench/efficacy.py does):
    # orjson takes only an exact str as an object key.
    assert orjson.loads(orjson.dumps({decision.reasons[0]: 1})) == {decision.reasons[0]: 1}


def test_errors_carry_their_code_as_plain_text() -> None:
    assert type(EnvelopeError("big", code=Reason.OVERSIZED).code) is str
