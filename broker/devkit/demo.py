"""The scripted demo: real router, real servers, agents at every trust level.

Each agent earns its level the way a real one does, over AMQP: it answers the broker's
signed challenge to prove key possession, then presents a credential from an issuer the
deployment trusts for identity, binding it to an organisation and, for stake, a bond from
a custodian the deployment trusts for stake. Outcome history
(successful interactions) is recorded directly. The outcomes are read back from the
recipients' queues, the blocked stream and the escalation queue, where a user would look.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from broker.amqp.management import ManagementAPI
from broker.clock import wall_clock_ms
from broker.config import BrokerConfig
from broker.core.envelope import PaymentIntent, encode_envelope
from broker.core.evidence import sign_evidence
from broker.core.identity import AgentKey
from broker.core.policy import Policy
from broker.core.records import Record
from broker.core.state import IssuerRole, RecipientProfile
from broker.errors import ConfigError
from broker.ops.provision import agent_amqp_url, provision_agent, setup_vhost
from broker.ops.reading import read_blocked, read_escalations
from broker.ops.sweeper import run_sweeper
from broker.router import Router
from broker.store.redis import RedisStore

DAY_MS = 86_400_000
DEMO_VHOST = "trust-demo"
DEMO_PREFIX = "demo:"


@dataclass(frozen=True)
class Step:
    """One scripted message and the outcome the default policy should give it."""

    label: str
    sender: str
    recipient: str
    options: dict[str, Any]
    expect: str
    raw: bytes | None = None


@dataclass
class Cast:
    """The demo's keys."""

    issuer: AgentKey  # trusted for identity credentials
    custodian: AgentKey  # trusted for stake: holds the trusted agent's collateral
    keys: dict[str, AgentKey]
    urls: dict[str, str]

    def did(self, name: str) -> str:
        """DID of a named demo agent."""
        return self.keys[name].did


async def _prepare(config: BrokerConfig, store: RedisStore) -> Cast:
    """Fresh vhost and key prefix, a trusted issuer, provisioned agents."""
    api = ManagementAPI(config.management_url)
    with contextlib.suppress(ConfigError):  # absent on the first run
        await asyncio.to_thread(api.delete_vhost, config.vhost)
    # The admin declares the topology (the servers create no guest; see credentials.py).
    admin = unquote(urlsplit(config.management_url).username or "")
    await setup_vhost(config, {"admin": admin})
    await store.purge()
    names = ["analyst", "archive", "newcomer", "verified", "established", "trusted"]
    keys = {name: AgentKey.generate() for name in names}
    cast = Cast(AgentKey.generate(), AgentKey.generate(), keys, {})
    await store.add_issuer(cast.issuer.did, {IssuerRole.IDENTITY})
    await store.add_issuer(cast.custodian.did, {IssuerRole.STAKE})
    for name in names:
        profile = RecipientProfile(cast.did(name))
        if name == "archive":
            profile = RecipientProfile(cast.did(name), retention="permanent")
        cast.urls[name] = agent_amqp_url(config, await provision_agent(config, store, profile))
    return cast


async def _earn_trust(cast: Cast, store: RedisStore, broker_did: str) -> None:
    """Each agent proves its key over AMQP and presents issuer-signed evidence."""
    from broker.sdk.client import AgentClient

    now = wall_clock_ms()
    for name, successes in (("verified", 0), ("established", 10), ("trusted", 60)):
        agent = cast.keys[name]
        documents = [
            sign_evidence(
                cast.issuer, "credential", id=f"cred-{name}", subject=agent.did,
                organisation="Example Corp", issued_at=now - 1000, expires_at=now + 30 * DAY_MS,
            )
        ]  # fmt: skip
        if name == "trusted":
            documents.append(
                sign_evidence(
                    cast.custodian, "bond", id="bond-trusted", subject=agent.did,
                    amount_minor=1_000_000, currency="USD", issued_at=now - 1000,
                    expires_at=now + DAY_MS,
                )
            )  # fmt: skip
        async with AgentClient(agent, cast.urls[name]) as client:
            await client.handshake(expected_broker=broker_did)
            presented = await client.present(*documents)
            assert not presented["refused"], presented["refused"]
        # Outcome history: what signed outcome reports would have built up.
        for _ in range(successes):
            await store.add_outcome(
                agent.did, success=True, weight=1.0, now_ms=now, policy=Policy()
            )
        await store.set_clean_streak(agent.did, successes)


def _pays(amount: str) -> dict[str, Any]:
    return {"kind": "payment", "payment": PaymentIntent(currency="USD", amount=amount)}


def _script(cast: Cast) -> list[Step]:
    analyst, archive = cast.did("analyst"), cast.did("archive")
    nobody = AgentKey.generate().did
    card = {"data_classes": ("payment_card",)}
    return [
        Step("new peer, data", "newcomer", analyst, {}, "block"),
        Step("verified, data", "verified", analyst, {}, "deliver"),
        Step("verified, pays $20", "verified", analyst, _pays("20.00"), "block"),
        Step("established, data", "established", analyst, {}, "deliver"),
        Step("established, pays $50", "established", analyst, _pays("50.00"), "deliver"),
        Step("established, pays $5,000", "established", analyst, _pays("5000.00"), "escalate"),
        Step("trusted, pays $5,000", "trusted", analyst, _pays("5000.00"), "deliver"),
        Step("card data to permanent archive", "trusted", archive, card, "block"),
        Step("to an unknown recipient", "established", nobody, {}, "block"),
    ]


async def _play(config: BrokerConfig, cast: Cast, steps: list[Step]) -> dict[str, str]:
    """Publish every step (plus forged, replayed and malformed ones); map id -> label."""
    from broker.sdk.client import AgentClient

    labels: dict[str, str] = {}
    async with AgentClient(cast.keys["newcomer"], config.amqp_vhost_url) as wire:
        for step in steps:
            sender = AgentClient(cast.keys[step.sender], config.amqp_vhost_url)
            envelope = sender.envelope(step.recipient, {"demo": step.label}, **step.options)
            labels[envelope.id] = step.label
            await wire.publish_raw(encode_envelope(envelope))
            if step.label == "trusted, pays $5,000":
                await asyncio.sleep(0.3)
                # The identical bytes again would be idempotent (one outcome, no block);
                # a replay is another message reusing the id, here with a new amount.
                again = sender.envelope(
                    step.recipient, {"demo": "replay"}, message_id=envelope.id,
                    **{**step.options, "payment": PaymentIntent(currency="USD", amount="4999.00")},
                )  # fmt: skip
                labels[envelope.id + "#replay"] = "replay of that payment"
                await wire.publish_raw(encode_envelope(again))
        forged = wire.envelope(cast.did("analyst"), {"demo": "forged"})
        forged = forged.model_copy(update={"sender": cast.did("trusted")})
        labels[forged.id] = "forged: newcomer signs as trusted"
        await wire.publish_raw(encode_envelope(forged))
        labels["<malformed>"] = "garbage bytes"
        await wire.publish_raw(b"\x00not json at all")
    return labels


async def _collect(
    config: BrokerConfig, cast: Cast, labels: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Read outcomes back from the queues and streams; label -> outcome row."""
    from broker.sdk.client import AgentClient

    rows: dict[str, dict[str, Any]] = {}
    for name in ("analyst", "archive"):
        async with AgentClient(cast.keys[name], config.amqp_vhost_url) as client:
            async for received in client.messages(timeout=1.5):
                trust = received.trust
                rows[labels[received.envelope.id]] = {
                    "action": "deliver", "score": trust.score, "tier": trust.tier,
                    "reason": trust.reasons[0] if trust.reasons else "",
                }  # fmt: skip
    for record in await read_escalations(config, limit=50):
        rows[labels[str(record.get("message_id"))]] = _record_row(record)
    for entry in await read_blocked(config, limit=100):
        record = entry.record
        message_id = record.get("message_id") or "<malformed>"
        label = labels.get(message_id, "?")
        if label in rows:
            label = labels.get(message_id + "#replay", label)
        rows[label] = _record_row(record)
    return rows


def _record_row(record: Record) -> dict[str, Any]:
    decision = record["decision"]
    return {
        "action": decision["action"],
        "score": decision["composite"],
        "tier": decision["tier"],
        "reason": record["reason"],
    }


def _print_table(steps: list[Step], rows: dict[str, dict[str, Any]]) -> int:
    expected = {step.label: step.expect for step in steps}
    for extra in ("replay of that payment", "forged: newcomer signs as trusted", "garbage bytes"):
        expected[extra] = "block"
    print(f"\n{'message':<36} {'score':>6}  {'tier':<12} {'action':<9} reason")
    print("-" * 90)
    wrong = 0
    for label in expected:
        row = rows.get(label)
        if row is None:
            print(f"{label:<36} {'-':>6}  {'-':<12} {'MISSING':<9}")
            wrong += 1
            continue
        score = "-" if row["score"] is None else f"{row['score']:.3f}"
        mark = "" if row["action"] == expected[label] else f"   <- expected {expected[label]}"
        wrong += bool(mark)
        print(f"{label:<36} {score:>6}  {row['tier']:<12} {row['action']:<9} {row['reason']}{mark}")
    print("-" * 90)
    print(
        "every message ended in exactly one place: an agent queue, trust.blocked or "
        "trust.escalations"
        if not wrong
        else f"{wrong} outcome(s) differ from the script"
    )
    return 1 if wrong else 0


async def run_demo(config: BrokerConfig, *, keep_running: bool = False) -> int:
    """Set up the demo world, play the script, print the decisions."""
    from broker.app import load_or_create_broker_key, open_store

    config = replace(config, vhost=DEMO_VHOST, key_prefix=DEMO_PREFIX)
    store = open_store(config)
    broker_key = load_or_create_broker_key(config)
    router = Router(config, store, broker_key=broker_key, sweeper=run_sweeper)
    try:
        print("preparing agents, handshakes, issuer evidence and history ...", file=sys.stderr)
        cast = await _prepare(config, store)
        await router.start()
        await _earn_trust(cast, store, broker_key.did)
        steps = _script(cast)
        labels = await _play(config, cast, steps)
        await asyncio.sleep(1.0)
        rows = await _collect(config, cast, labels)
        status = _print_table(steps, rows)
        if keep_running:
            print("router running; Ctrl-C to stop", file=sys.stderr)
            await asyncio.Event().wait()
        return status
    finally:
        await router.stop()
        await store.close()
