"""What the CLI says when a command fails: one line naming what failed, where (the URL
with its password masked, or the file) and what to do. `--debug` adds the traceback."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pydantic import ValidationError

from broker.amqp.errors import (
    AMQPConnectionError,
    AMQPError,
    ChannelAccessRefused,
    ChannelNotFoundEntity,
    ProbableAuthenticationError,
)
from broker.amqp.failover import NoNodeAvailable
from broker.config import BrokerConfig, mask_url
from broker.errors import EvidenceError, StoreUnavailable, TrustBrokerError

START_LOCAL = "start local ones with `trust-broker servers start`"


def amqp_url_in_use(args: argparse.Namespace, config: BrokerConfig | None) -> str:
    """The AMQP URL the failed command used: the agent's own, else the router's."""
    agent = getattr(args, "agent_url", None) or os.environ.get("TRUST_AGENT_URL")
    if agent:
        return mask_url(agent)
    return mask_url(config.amqp_vhost_url) if config is not None else "the AMQP URL"


def explain_error(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    """One line for `exc`; unexpected errors say how to see the traceback."""
    cause = exc.__cause__
    if isinstance(exc, TrustBrokerError) and isinstance(cause, AMQPError | OSError):
        return explain_error(cause, args, config)  # e.g. a review step whose RabbitMQ failed
    for kind, explain in _EXPLAINERS:
        if isinstance(exc, kind):
            return str(explain(exc, args, config))
    return (
        f"unexpected {type(exc).__name__}: {exc} (a bug: run again with --debug for the "
        "traceback, and report it)"
    )


def _store(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    url = mask_url(config.redis_url) if config is not None else "Redis"
    return (
        f"cannot reach Redis at {url} ({exc}): check --redis-url / TRUST_REDIS_URL, or "
        f"{START_LOCAL}"
    )


def _login(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    return (
        f"RabbitMQ refused the login of {amqp_url_in_use(args, config)}: wrong user or "
        "password; use the URL `trust-broker provision` printed for this agent"
    )


def _unreachable(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    reason = exc.args[-1] if exc.args else exc
    return (
        f"cannot reach RabbitMQ at {amqp_url_in_use(args, config)} ({reason}): check the URL "
        f"(--agent-url, --amqp-url, TRUST_AMQP_URL), or {START_LOCAL}"
    )


def _no_node(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    assert isinstance(exc, NoNodeAvailable)
    if exc.errors and all(isinstance(e, ProbableAuthenticationError) for e in exc.errors):
        return _login(exc, args, config)
    last = exc.errors[-1] if exc.errors else exc
    return _unreachable(last, args, config)


def _refused(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    detail = str(exc.args[0]) if exc.args else str(exc)
    return (
        f"RabbitMQ refused this login access ({detail.removeprefix('ACCESS_REFUSED - ')}): an "
        "agent's login may publish only to its own lane trust.in.<DID> and read only its own "
        "queue; use "
        "the --agent-url provisioned for this --key"
    )


def _not_found(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    detail = str(exc.args[0]) if exc.args else str(exc)
    vhost = config.vhost if config is not None else "this vhost"
    return (
        f"RabbitMQ has no such queue or exchange ({detail.split(' - ')[-1]}): start a router "
        f"on vhost {vhost!r} first (`trust-broker router`), or check --vhost / TRUST_VHOST"
    )


def _amqp(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    return f"RabbitMQ at {amqp_url_in_use(args, config)} failed: {exc!r}"


def _evidence(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    assert isinstance(exc, EvidenceError)
    return f"{exc} ({exc.code})"


def _invalid(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    assert isinstance(exc, ValidationError)
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "input"
    return f"{where}: {first.get('msg')}"


def _file(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    assert isinstance(exc, OSError)
    if exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    return str(exc)


def _plain(exc: BaseException, args: argparse.Namespace, config: BrokerConfig | None) -> str:
    return str(exc)


_EXPLAINERS: list[tuple[type[BaseException], Any]] = [
    (StoreUnavailable, _store),
    (EvidenceError, _evidence),
    (NoNodeAvailable, _no_node),
    (TrustBrokerError, _plain),
    (ProbableAuthenticationError, _login),
    (AMQPConnectionError, _unreachable),
    (ChannelAccessRefused, _refused),
    (ChannelNotFoundEntity, _not_found),
    (AMQPError, _amqp),
    (ValidationError, _invalid),
    (OSError, _file),
    (ValueError, _plain),
]
