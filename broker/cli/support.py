"""What every command module of the CLI shares: output, help layout, who is acting, and
reading the files and flags several commands take.

stdout carries the value a script wants (a DID, a URL, a message id, JSON); stderr
carries the explanation a person wants (what changed, why, what to do next), so
`ALICE=$(trust-broker keygen --out alice.key)` captures the DID and still shows the rest.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from broker.core.envelope import PaymentIntent
from broker.errors import ConfigError

PERSON_VARIABLE = "TRUST_REVIEWER"


def print_json(value: Any) -> None:
    """Pretty JSON on stdout, for --json output."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def say(text: str = "") -> None:
    """A line for the person at the terminal (stderr: stdout stays machine-readable)."""
    print(text, file=sys.stderr, flush=True)


def score(value: Any) -> str:
    """A score as text, always with four decimals; '-' when there is none."""
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def json_flag(parser: argparse.ArgumentParser) -> None:
    """The --json flag every command takes."""
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions to the terminal, keeps the examples epilog as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return text
        return "\n\n".join(
            textwrap.fill(" ".join(part.split()), width, initial_indent=indent,
                          subsequent_indent=indent)
            for part in text.split("\n\n")
        )  # fmt: skip


def command(
    sub: Any, name: str, *, summary: str, description: str, examples: Sequence[str]
) -> argparse.ArgumentParser:
    """A subcommand with a one-line summary, a description and worked examples."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=HelpFormatter,
    )
    return parser


def os_account(env: Mapping[str, str]) -> str | None:
    """Who is at the keyboard: TRUST_REVIEWER if set, else the OS account name (which
    getpass finds in LOGNAME, USER or the password database); None when neither says."""
    configured = env.get(PERSON_VARIABLE, "").strip()
    if configured:
        return configured
    try:
        return getpass.getuser() or None
    except (OSError, KeyError, ImportError):  # no such variables and no passwd entry
        return None


def person(given: str | None, default: str | None, flag: str) -> str:
    """The name a decision is recorded under: the flag, else the default; refused when
    there is neither."""
    name = (given or default or "").strip()
    if not name:
        raise ConfigError(
            f"say who is deciding: {flag} NAME (it is kept on record); no name is configured "
            f"({PERSON_VARIABLE}) and this OS account has none"
        )
    return name


def standing_lines(view: dict[str, Any], *, key: str = "KEY") -> list[str]:
    """A peer's standing for a person: composite and tier, each dimension with its
    reasons, what the router does with the message, the weakest dimension, the next step."""
    from broker.core.guidance import next_step, verdict

    thresholds = view.get("thresholds") or {}
    bounds = ", ".join(f"{name} {value:.2f}" for name, value in thresholds.items())
    lines = [
        f"composite {score(view.get('composite'))}  tier {view.get('tier')}"
        + (f"  ({bounds}; policy v{view.get('policy_version')})" if bounds else "")
    ]
    for name, value in (view.get("dimensions") or {}).items():
        bar = "#" * round(float(value) * 20)
        reasons = ", ".join((view.get("reasons") or {}).get(name, []))
        lines.append(f"  {name:<11} {score(value)} {bar:<20} {reasons}")
    lines.append(f"verdict:  {verdict(view)}")
    lines.append(f"weakest:  {view.get('weakest')}: {view.get('remediation')}")
    lines.append(f"next:     {next_step(view, key=key)}")
    return lines


def read_json(path: str, what: str) -> Any:
    """A JSON file, or a one-line error naming it."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not JSON: {exc}") from None


def write_json(path: str, document: dict[str, Any]) -> None:
    """Write a signed document (public: it holds no secret)."""
    Path(path).write_text(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def payment_of(amount: str | None, currency: str) -> PaymentIntent | None:
    """A payment intent from --amount/--currency, or a one-line error naming the flag."""
    if amount is None:
        return None
    from pydantic import ValidationError

    try:
        return PaymentIntent(currency=currency, amount=amount)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"--amount {amount!r} --currency {currency!r}: {problem} (e.g. --amount 12.50)"
        ) from None
