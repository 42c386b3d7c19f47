"""The efficacy simulation's engine: the broker's own decision path on simulated time.

Nothing here scores a message. Agents onboard through the negotiation service's own
request handler (handshake, signed presentations), every message and every report is a
signed envelope decided by `broker.router.pipeline.decide_envelope` and recorded by the store's
`finish` (behaviour detectors included), against a real Redis under a private key prefix.
What the simulation adds is only what the world around the broker does: who sends what,
to whom, when, and how recipients report what they received. Time is simulated: the
clock every component reads is the engine's.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from broker.config import BrokerConfig
from broker.core.envelope import PaymentIntent, decode_envelope, encode_envelope, sign_envelope
from broker.core.evidence import sign_evidence
from broker.core.handshake import answer_challenge
from broker.core.identity import AgentKey
from broker.core.policy import Policy
from broker.core.presentation import make_presentation
from broker.core.scoring.stake import reference_minor
from broker.core.state import IssuerRole, RecipientProfile
from broker.router.negotiation import NegotiationService
from broker.router.pipeline import decide_envelope, finish_of
from broker.store.redis import RedisStore

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Handshake sessions last a day here (the service default is an hour): agents in the
# simulation would otherwise spend most of their traffic re-proving their keys.
SESSION_MS = DAY_MS


@dataclass(eq=False)
class Agent:
    """One simulated agent: its key, its population and its counters."""

    name: str
    key: AgentKey
    population: str
    organisation: str | None = None
    partners: list[Agent] = field(default_factory=list)
    joined_ms: int = 0
    turn_ms: int | None = None  # bait and switch: when it turns bad
    session_until_ms: int = 0
    sent: int = 0
    established_at: tuple[int, int] | None = None  # (ms, messages sent) when first there
    lost_payment_tier: tuple[int, int] | None = None  # (ms, bad messages) after turning
    bad_sent: int = 0
    retired: bool = False
    generation: int = 0  # whitewashing: how many fresh keys this one descends from

    @property
    def did(self) -> str:
        """The agent's did:key."""
        return self.key.did


@dataclass(frozen=True)
class Sent:
    """One message the simulation sent, what it was really, and what the broker did."""

    t_ms: int
    sender: Agent
    recipient: Agent
    kind: str
    malicious: bool
    value_ref_minor: int  # 0 for non-payments
    message_id: str
    action: str
    reason: str
    tier: str
    composite: float | None
    entry: dict[str, Any]


class Engine:
    """Schedules events on simulated time and runs them through the broker, in order."""

    def __init__(
        self, store: RedisStore, config: BrokerConfig, policy: Policy, seed: int, start_ms: int
    ) -> None:
        self.store = store
        self.policy = policy
        self.rng = random.Random(seed)
        self.now = start_ms
        self.start_ms = start_ms
        self._seed = seed
        self._ids = itertools.count(1)
        self._queue: list[tuple[int, int, Callable[[], Awaitable[None]]]] = []
        self._order = itertools.count()
        self.broker_key = AgentKey(self.rng.randbytes(32))
        self.identity_issuer = AgentKey(self.rng.randbytes(32))
        self.custodian = AgentKey(self.rng.randbytes(32))
        self.negotiation = NegotiationService(
            config, store, self.broker_key, lambda: self.now, session_ms=SESSION_MS
        )
        self.sent: list[Sent] = []

    # -- the world's fixtures -------------------------------------------------------------

    async def setup(self) -> None:
        """The deployment: its policy, an identity issuer and a stake custodian."""
        await self.store.save_policy(self.policy, who="efficacy", why="simulation")
        await self.store.add_issuer(self.identity_issuer.did, {IssuerRole.IDENTITY})
        await self.store.add_issuer(self.custodian.did, {IssuerRole.STAKE})

    def agent(self, name: str, population: str, organisation: str | None = None) -> Agent:
        """A new agent with a key drawn from the simulation's seed."""
        return Agent(name, AgentKey(self.rng.randbytes(32)), population, organisation)

    async def register(self, agent: Agent) -> None:
        """Provision the agent as a recipient (what `trust-broker provision` records)."""
        await self.store.register_recipient(RecipientProfile(agent.did))

    async def handshake(self, agent: Agent) -> None:
        """The challenge handshake, through the negotiation service's request handler."""
        hello = await self._negotiate({"op": "hello", "agent": agent.did})
        response = answer_challenge(
            agent.key, hello["challenge"], self.now, expected_broker=self.broker_key.did
        )
        proved = await self._negotiate({"op": "prove", "response": response})
        if proved.get("op") != "proved":
            raise RuntimeError(f"handshake failed: {proved}")
        agent.session_until_ms = int(proved["result"]["expires_at"])

    async def present(self, agent: Agent, *documents: dict[str, Any]) -> dict[str, Any]:
        """Documents in a presentation the agent signs, as the SDK sends them."""
        presentation = make_presentation(
            agent.key, self.broker_key.did, list(documents), now_ms=self.now
        )
        return await self._negotiate({"op": "present", "presentation": presentation})

    def credential(self, agent: Agent, days: int = 365) -> dict[str, Any]:
        """An identity credential from the deployment's identity issuer."""
        assert agent.organisation is not None
        return sign_evidence(
            self.identity_issuer, "credential", id=f"cred-{agent.name}-{self._seed}",
            subject=agent.did, organisation=agent.organisation, issued_at=self.now - 1,
            expires_at=self.now + days * DAY_MS,
        )  # fmt: skip

    def bond(
        self, agent: Agent, major_usd: int, *, issuer: AgentKey | None = None
    ) -> dict[str, Any]:
        """A bond from the custodian (or from `issuer`, e.g. the agent itself)."""
        return sign_evidence(
            issuer or self.custodian, "bond", id=f"bond-{agent.name}-{next(self._ids)}",
            subject=agent.did, amount_minor=major_usd * 100, currency="USD",
            issued_at=self.now - 1, expires_at=self.now + 365 * DAY_MS,
        )  # fmt: skip

    async def _negotiate(self, request: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = await self.negotiation.handle(orjson.dumps(request))
        return reply

    # -- messages -----------------------------------------------------------------------------

    async def send(
        self,
        sender: Agent,
        recipient: Agent,
        kind: str = "data",
        *,
        malicious: bool = False,
        amount: str | None = None,
        currency: str = "USD",
        body: Any = None,
    ) -> Sent:
        """Sign, decide and record one message, exactly as the router would."""
        if sender.session_until_ms - self.now < HOUR_MS:
            await self.handshake(sender)  # SDK users refresh their session before it ends
        payment = None if amount is None else PaymentIntent(currency=currency, amount=amount)
        message_id = f"sim{self._seed}-{next(self._ids):09d}"
        env = sign_envelope(
            sender.key, id=message_id, recipient=recipient.did, kind=kind, created_at=self.now,
            nonce=self.rng.randbytes(16).hex(), payment=payment,
            body=body if body is not None else {"n": sender.sent},
        )  # fmt: skip
        raw = encode_envelope(env)
        decided = await decide_envelope(
            self.store, decode_envelope(raw), raw, self.policy, self.now, redelivered=False
        )
        assert decided is not None
        entry: dict[str, Any] = {}
        if decided.finishes:
            finish = finish_of(decided, len(raw), self.now)
            await self.store.finish(env, decided.digest, finish, self.policy, self.now)
            entry = orjson.loads(finish.entry)
        sender.sent += 1
        decision = decided.outcome.decision
        value = 0
        if payment is not None:
            value = (
                reference_minor(payment.minor_units, currency, self.policy.currency, round_up=True)
                or 0
            )
        sent = Sent(
            self.now, sender, recipient, kind, malicious, value, message_id,
            decision.action.value, decision.reasons[0], decision.tier.value, decision.composite,
            entry,
        )  # fmt: skip
        if kind != "report":
            self.sent.append(sent)
        return sent

    async def report(
        self, reporter: Agent, about: Sent, outcome: str, severity: str | None = None
    ) -> Sent:
        """The recipient of `about` reports its outcome, in a signed report envelope."""
        body: dict[str, Any] = {"message_id": about.message_id, "outcome": outcome}
        if severity is not None:
            body["severity"] = severity
        return await self.send(reporter, about.sender, "report", body=body)

    # -- time -----------------------------------------------------------------------------

    def at(self, t_ms: int, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` at simulated time `t_ms`."""
        heapq.heappush(self._queue, (t_ms, next(self._order), action))

    async def run_until(
        self, end_ms: int, on_progress: Callable[[int], None] | None = None
    ) -> None:
        """Run every scheduled event before `end_ms`, in time order."""
        last_day = -1
        while self._queue and self._queue[0][0] < end_ms:
            t_ms, _, action = heapq.heappop(self._queue)
            self.now = max(self.now, t_ms)
            day = (self.now - self.start_ms) // DAY_MS
            if on_progress is not None and day != last_day:
                last_day = day
                on_progress(int(day))
            await action()
        self.now = end_ms
