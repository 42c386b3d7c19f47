"""What the console pages show, shaped from store and stream records (pure).

Charts are drawn as inline SVG from numbers computed here, so the templates only place
them and no chart library or script is needed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.core.envelope import decode_envelope
from broker.core.policy import Policy
from broker.core.records import UNPARSEABLE, Record, record_time_ms
from broker.errors import EnvelopeError

DIMENSIONS = ("identity", "reputation", "compliance", "behavioral", "stake")
BAR_WIDTH = 220  # px of a full (1.0) bar
PLOT_WIDTH, PLOT_HEIGHT, PLOT_PAD = 640, 200, 28


def when(ms: int | None) -> str:
    """A Unix-ms time as UTC text, or a dash."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def band(score: float | None) -> str:
    """CSS class for a score: low, mid or high."""
    if score is None or score < 0.5:
        return "low"
    return "mid" if score < 0.8 else "high"


@dataclass(frozen=True)
class Bar:
    """One dimension of a decision as a horizontal bar."""

    name: str
    score: float
    weight: float
    width: int
    band: str


def bars(dimensions: dict[str, float], policy: Policy) -> list[Bar]:
    """The five dimension bars in their fixed order (empty for a gate block)."""
    weights = policy.weights.model_dump()
    return [
        Bar(name, score, float(weights.get(name, 0.0)), round(score * BAR_WIDTH), band(score))
        for name in DIMENSIONS
        if (score := dimensions.get(name)) is not None
    ]


def feed_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A decision log entry as one row of the live feed (also the JSON the feed polls)."""
    reasons = entry.get("reasons") or []
    return {
        "t": entry.get("t"),
        "when": when(entry.get("t")),
        "trace": entry.get("trace"),
        "from": entry.get("from"),
        "to": entry.get("to"),
        "kind": entry.get("kind"),
        "action": entry.get("action"),
        "tier": entry.get("tier"),
        "composite": entry.get("c"),
        "reason": reasons[0] if reasons else "",
    }


def payment_of(record: Record) -> str:
    """'150.00 USD' from a record's original envelope, or '' when it carries no payment."""
    try:
        envelope = decode_envelope(base64.b64decode(record["raw_b64"])).envelope
    except (EnvelopeError, KeyError, ValueError, TypeError):
        return ""
    payment = envelope.payment
    if payment is None:
        return ""
    amount = payment.amount or f"{payment.minor_units} minor units of"
    return f"{amount} {payment.currency}"


def review_row(record: Record, policy: Policy) -> dict[str, Any]:
    """A blocked or escalated record for display; the raw bytes stay out of the page."""
    decision = record.get("decision") or {}
    return {
        "trace": record.get("trace_id") or "",
        "when": when(record_time_ms(record)),
        "message_id": record.get("message_id"),
        "sender": record.get("sender"),
        "recipient": record.get("recipient"),
        "kind": record.get("kind"),
        "reason": record.get("reason"),
        "payment": payment_of(record),
        "composite": decision.get("composite"),
        "tier": decision.get("tier"),
        "gate": decision.get("gate"),
        "reasons": decision.get("reasons") or [],
        "remediation": decision.get("remediation") or "",
        "bars": bars(decision.get("dimensions") or {}, policy),
        "unparseable": record.get(UNPARSEABLE) or "",
    }


@dataclass(frozen=True)
class Plot:
    """A composite-over-time line with the tier thresholds as guides."""

    points: str  # SVG polyline "x,y x,y ..."
    dots: list[tuple[float, float, str]]  # x, y, tooltip
    guides: list[tuple[str, float]]  # label, y
    first: str
    last: str
    width: int = PLOT_WIDTH
    height: int = PLOT_HEIGHT


def score_history(entries: list[dict[str, Any]], did: str, policy: Policy) -> Plot | None:
    """The peer's composite in each logged decision it sent, oldest first; None if none."""
    scored = [
        (int(e["t"]), float(e["c"]))
        for e in entries
        if e.get("from") == did and e.get("c") is not None and e.get("t")
    ]
    if not scored:
        return None
    start, end = scored[0][0], scored[-1][0]
    span = max(end - start, 1)

    def x(t: int) -> float:
        return round(PLOT_PAD + (t - start) / span * (PLOT_WIDTH - 2 * PLOT_PAD), 1)

    def y(score: float) -> float:
        return round(PLOT_HEIGHT - PLOT_PAD - score * (PLOT_HEIGHT - 2 * PLOT_PAD), 1)

    dots = [(x(t), y(c), f"{when(t)}  {c:.3f}") for t, c in scored]
    thresholds = policy.thresholds
    guides = [
        (name, y(float(getattr(thresholds, name))))
        for name in ("probation", "established", "trusted")
    ]
    points = " ".join(f"{px},{py}" for px, py, _ in dots)
    return Plot(points, dots, guides, when(start), when(end))


def history_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A policy history entry without the full policy body."""
    return {k: entry.get(k) for k in ("version", "who", "why")} | {"when": when(entry.get("at_ms"))}


TIER_RANK = {"trusted": 3, "established": 2, "probation": 1, "blocked": 0, "revoked": -1}
PEER_SORTS = ("composite", "tier", "last_seen", "did")


def peer_rows(
    entries: list[dict[str, Any]], recipients: list[str], search: str, sort: str
) -> list[dict[str, Any]]:
    """Every peer seen in `entries` (decision log, oldest first) or provisioned, with its
    latest composite, tier and action, matching `search` (part of the DID), sorted."""
    peers: dict[str, dict[str, Any]] = {}
    for entry in entries:
        did = entry.get("from")
        if not isinstance(did, str):
            continue
        row = peers.setdefault(did, {"did": did, "messages": 0, "provisioned": False})
        row.update(composite=entry.get("c"), tier=entry.get("tier"), action=entry.get("action"),
                   last_seen=entry.get("t"), when=when(entry.get("t")))  # fmt: skip
        row["messages"] += 1
    for did in recipients:
        unseen = {"did": did, "messages": 0, "composite": None, "tier": None, "action": None,
                  "last_seen": None, "when": "never"}  # fmt: skip
        row = peers.setdefault(did, unseen)
        row["provisioned"] = True
    wanted = search.strip().lower()
    rows = [row for row in peers.values() if wanted in row["did"].lower()]
    return sorted(rows, key=_peer_key(sort))


def _peer_key(sort: str) -> Any:
    """Highest first; peers with nothing known last; then by DID."""

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        composite = row.get("composite")
        seen = row.get("last_seen")
        if sort == "did":
            return (row["did"],)
        if sort == "tier":
            return (-TIER_RANK.get(row.get("tier") or "", -2), -(composite or -1.0), row["did"])
        if sort == "last_seen":
            return (-(seen or 0), row["did"])
        return (composite is None, -(composite or 0.0), row["did"])

    return key
