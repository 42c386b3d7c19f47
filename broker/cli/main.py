"""trust-broker command line: the parser and the one entry point that runs a command.

The command line (broker/cli/) and devkit/ (what it runs locally) are the only modules
that read the environment (tests/unit/test_layers.py); everything else gets typed
configuration (broker/cli/settings.py). Each command group is a module beside this one:
agent commands (messages, negotiation, documents), ops commands (provision, evidence,
lookups), federation, policy, reviews (blocked, escalations), reports, console, and the
commands that run things (local).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from broker.cli.settings import broker_config
from broker.cli.support import HelpFormatter, os_account
from broker.config import BrokerConfig
from broker.errors import ConfigError

Handler = Callable[[argparse.Namespace, BrokerConfig], Coroutine[Any, Any, int]]
# Exit status of a command whose output pipe closed early (`... | head`), as for SIGPIPE.
BROKEN_PIPE = 141


# -- parser ---------------------------------------------------------------------------------

DESCRIPTION = """\
Message-layer trust broker for AI agents. Every inter-agent message is scored on five
weighted dimensions (identity, reputation, compliance, behavioral, stake) before it can
reach an agent's queue, and is delivered, blocked or escalated.

Connection settings come from flags, then TRUST_AMQP_URL, TRUST_REDIS_URL,
TRUST_MANAGEMENT_URL, TRUST_VHOST, TRUST_KEY_PREFIX; local server ports from
TRUST_AMQP_PORT, TRUST_REDIS_PORT, TRUST_MANAGEMENT_PORT, TRUST_DIST_PORT, TRUST_RUN_DIR.
Decisions are recorded under --reviewer/--who, else TRUST_REVIEWER, else the OS account.

Start with README.md's walkthrough; `trust-broker COMMAND --help` explains each command."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    from broker.cli import (
        blocked,
        console,
        documents,
        escalations,
        evidence,
        federation,
        local,
        lookups,
        messages,
        negotiation,
        policy,
        provision,
        reports,
    )

    parser = argparse.ArgumentParser(
        prog="trust-broker", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    parser.add_argument("--amqp-url", help="router AMQP URL (env TRUST_AMQP_URL)")
    parser.add_argument("--redis-url", help="Redis URL (env TRUST_REDIS_URL)")
    parser.add_argument("--management-url", help="RabbitMQ management API URL")
    parser.add_argument("--vhost", help="RabbitMQ virtual host (env TRUST_VHOST; default /)")
    parser.add_argument("--key-prefix", help="Redis key prefix (env TRUST_KEY_PREFIX; default tb:)")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("TRUST_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG logs one JSON line per decision (no message bodies, no secrets)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, print the full traceback too"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    person = os_account(os.environ)
    for group in (messages, negotiation, documents, provision, evidence, lookups, federation):
        group.add_commands(sub)
    policy.add_commands(sub, default_who=person)
    blocked.add_commands(sub, default_reviewer=person)
    escalations.add_commands(sub, default_reviewer=person)
    reports.add_commands(sub, default_reviewer=person)
    console.add_commands(sub)
    local.add_commands(sub)
    return parser


def event_loop_factory(
    args: argparse.Namespace, env: Mapping[str, str]
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The router's event loop: asyncio's own unless uvloop is asked for (`auto` takes
    it when installed); other commands always run on asyncio's. None means asyncio's."""
    choice = getattr(args, "loop", False)
    if choice is False:  # not the router: short commands gain nothing from uvloop
        return None
    choice = choice or env.get("TRUST_EVENT_LOOP", "asyncio")
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"TRUST_EVENT_LOOP must be auto, uvloop or asyncio, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "--loop uvloop: uvloop is not installed (pip install 'trust-broker[uvloop]')"
            ) from None
        return None
    return uvloop.new_event_loop


# -- running a command, and saying what went wrong ----------------------------------------


def _logging(level: str, command: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if level != "DEBUG":
        # aio-pika narrates connections and consumers at INFO, and logs a refused connection
        # as an ERROR before raising it: a short command says it once, in its own words. A
        # router keeps the warnings (lost connections, reconnections).
        quiet = logging.WARNING if command == "router" else logging.CRITICAL
        for name in ("aio_pika", "aiormq"):
            logging.getLogger(name).setLevel(quiet)


def explain(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    """One line: what failed, against which URL or file, and what to do about it."""
    from broker.cli.errors import explain_error

    return explain_error(exc, args, config)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the trust-broker console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _logging(args.log_level, args.command)
    handler: Handler = args.handler
    config: BrokerConfig | None = None
    try:
        config = broker_config(os.environ, args)
        with asyncio.Runner(loop_factory=event_loop_factory(args, os.environ)) as runner:
            return runner.run(handler(args, config))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `trust-broker ... | head`: the reader left; stop quietly, as other tools do (and
        # point stdout at /dev/null, or flushing it at exit fails once more).
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"trust-broker {args.command}: error: {explain(exc, args, config)}", file=sys.stderr)
        return 1
