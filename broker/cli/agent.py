"""What the agent commands share: the agent's SDK client, connected with its own login,
and the broker's view of the agent after each step.

Commands that talk to the broker take the agent's --key and its own --agent-url (the
URL `provision` printed) and go over AMQP through the SDK (broker/sdk/), exactly as a
program would.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from broker.cli.support import json_flag, say, standing_lines
from broker.config import BrokerConfig
from broker.core.envelope import PaymentIntent
from broker.errors import EvidenceError, TrustBrokerError
from broker.sdk.client import AgentClient
from broker.sdk.keyfile import load_key

AGENT_URL_HELP = (
    "the agent's own AMQP URL, as `trust-broker provision` printed it (env TRUST_AGENT_URL)"
)


def agent_url(args: argparse.Namespace, config: BrokerConfig) -> str:
    """--agent-url, else TRUST_AGENT_URL, else the router's URL (which an agent lacks)."""
    return str(args.agent_url or os.environ.get("TRUST_AGENT_URL") or config.amqp_vhost_url)


@asynccontextmanager
async def connected(args: argparse.Namespace, config: BrokerConfig) -> AsyncIterator[AgentClient]:
    """The agent's SDK client, connected with its own login."""
    async with AgentClient(load_key(Path(args.key)), agent_url(args, config)) as client:
        yield client


async def show_standing(
    client: AgentClient, args: argparse.Namespace, *, kind: str = "data",
    payment: PaymentIntent | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """Ask the broker where this agent stands now and print it; None when it cannot say
    (no router answering, or not the agent's own login)."""
    try:
        view = await client.standing(kind=kind, payment=payment)
    except (TrustBrokerError, TimeoutError) as exc:
        code = f" ({exc.code})" if isinstance(exc, EvidenceError) else ""
        say(f"(standing unavailable{code}: {exc or 'no answer'})")
        return None
    if not args.json:
        for line in standing_lines(view, key=args.key):
            say(line)
    return view


async def present(
    client: AgentClient, args: argparse.Namespace, documents: list[Any], names: list[str]
) -> dict[str, Any]:
    """Present `documents` through the SDK and say what became of each."""
    reply = await client.present(*documents)
    refused = {item["index"]: item for item in reply.get("refused") or []}
    if not args.json:
        for index, name in enumerate(names):
            document = documents[index] if isinstance(documents[index], dict) else {}
            kind = document.get("type", "document")
            # A W3C credential's type is a list; its last entry is the specific one.
            kind = kind[-1] if isinstance(kind, list) and kind else kind
            what = str(kind).removeprefix("trust-broker/")
            if index in refused:
                item = refused[index]
                say(f"refused {what} {name}: {item['message']} ({item['code']})")
            else:
                say(f"accepted {what} {document.get('id', '')} from {name}")
    return reply


def connection_flags(
    parser: argparse.ArgumentParser, *, key_help: str = "the agent's key file"
) -> None:
    """--key, --agent-url and --json: what every command that connects as the agent takes."""
    parser.add_argument("--key", required=True, help=key_help)
    parser.add_argument("--agent-url", help=AGENT_URL_HELP)
    json_flag(parser)
