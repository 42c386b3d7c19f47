"""The agent's client: sign and publish envelopes, consume its own queue, negotiate with the
broker (handshake, presentations, standing)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from broker.amqp.errors import AMQP_ERRORS, ChannelNotFoundEntity, DeliveryError
from broker.amqp.failover import connect_robust_any, with_heartbeat
from broker.clock import wall_clock_ms
from broker.config import Topology, mask_url, split_urls
from broker.core.envelope import (
    Envelope,
    PaymentIntent,
    decode_envelope,
    encode_envelope,
    sign_envelope,
    signature_valid,
)
from broker.core.handshake import Proof, answer_challenge
from broker.core.identity import AgentKey
from broker.core.presentation import make_presentation
from broker.errors import Backpressure, BrokerUnavailable, EnvelopeError, EvidenceError
from broker.sdk.publishing import Window, uncancelled
from broker.sdk.received import Received, TrustInfo
from broker.sdk.requests import RequestLine, check_result

# Recently seen ids: the router suppresses duplicates, and this closes the remaining
# window (a crash between a confirmed publish and recording it) for SDK users.
_RECENT_IDS = 10_000
# What a publish on a failing connection raises; the SDK waits for the next node.
_PUBLISH_ERRORS = AMQP_ERRORS
_ATTEMPT_S = 10.0  # one node's chance to confirm a publish before the next is tried
# A full lane nacks the publish: wait this long before the first retry, doubling up to the
# cap (with jitter, so many blocked publishes do not retry in step).
_PUSHBACK_FIRST_S = 0.02
_PUSHBACK_MAX_S = 1.0
_WINDOW_MAX = 1024  # publishes awaiting their confirm at once, when nothing pushes back


class AgentClient:
    """An agent's connection to the broker (async context manager)."""

    def __init__(
        self,
        key: AgentKey,
        amqp_url: str,  # includes the vhost as its path, see broker.config.with_vhost
        *,
        topology: Topology | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        publish_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        """`amqp_url` may list several cluster nodes, comma-separated: the client connects
        to the first that answers and fails over to the next. `publish_timeout` bounds
        how long send() keeps trying (the same bytes) through an outage."""
        self.key = key
        self._amqp_url = amqp_url
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._topology = topology or Topology()
        self._clock = clock
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._handshakes: RequestLine | None = None
        # The broker's DID, learnt from its signed handshake result; presentations name it.
        self._broker: str | None = None
        # Ids whose first publish went unconfirmed, so the same bytes went out again.
        self.republished: set[str] = set()
        # Publishes the broker refused because this agent's lane was full (then retried).
        self.pushbacks = 0
        self._window = Window(_WINDOW_MAX)
        # Where publishes go: the agent's own lane when logged in as itself (see connect).
        self._ingress = self._topology.ingress_exchange

    @property
    def did(self) -> str:
        """This agent's did:key."""
        return self.key.did

    async def connect(self) -> AgentClient:
        """Open a robust connection (to the first node that answers; on loss, to the next)
        and a channel with publisher confirms."""
        # A 10 s heartbeat: a node that froze is given up on in about 30 s, not 3 min.
        urls = [with_heartbeat(url, 10) for url in split_urls(self._amqp_url)]
        try:
            self._connection = await connect_robust_any(urls, timeout=self._connect_timeout)
        except ConnectionError as exc:
            raise BrokerUnavailable(f"{exc} (URLs: {mask_url(self._amqp_url)})") from exc
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._ingress = await self._find_ingress(self._connection)
        return self

    @property
    def ingress_exchange(self) -> str:
        """The exchange this client publishes to: trust.in.<DID>, the agent's own lane,
        when it is logged in with the login provision created for its DID (and the lane
        exists); the shared trust.ingress otherwise."""
        return self._ingress

    async def _find_ingress(self, connection: AbstractRobustConnection) -> str:
        if not self.logged_in_as_self:
            return self._topology.ingress_exchange
        lane = self._topology.lane_exchange(self.did)
        # Asked on a channel of its own: a missing exchange closes the channel it is
        # asked on (agents provisioned before lanes existed have none).
        channel = await connection.channel(publisher_confirms=False)
        try:
            await channel.get_exchange(lane, ensure=True)
        except ChannelNotFoundEntity:
            return self._topology.ingress_exchange
        finally:
            if not channel.is_closed:
                await channel.close()
        return lane

    async def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._handshakes = None

    async def __aenter__(self) -> AgentClient:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def envelope(
        self,
        recipient: str,
        body: Any,
        *,
        kind: str = "data",
        payment: PaymentIntent | None = None,
        data_classes: tuple[str, ...] = (),
        ttl_ms: int | None = None,
        message_id: str | None = None,
    ) -> Envelope:
        """Build and sign an envelope from this agent (fresh id, nonce and timestamp)."""
        now = self._clock()
        return sign_envelope(
            self.key,
            id=message_id or uuid.uuid4().hex,
            recipient=recipient,
            kind=kind,
            created_at=now,
            nonce=os.urandom(16).hex(),
            expires_at=None if ttl_ms is None else now + ttl_ms,
            payment=payment,
            data_classes=data_classes,
            body=body,
        )

    async def send(self, recipient: str, body: Any, **options: Any) -> Envelope:
        """Sign and publish a message; returns once the broker confirmed it."""
        envelope = self.envelope(recipient, body, **options)
        await self.send_envelope(envelope)
        return envelope

    async def send_envelope(self, envelope: Envelope) -> None:
        """Publish an envelope built earlier (e.g. again, after BrokerUnavailable: the
        same bytes are routed once); returns once the broker confirmed it."""
        await self.publish_raw(encode_envelope(envelope), message_id=envelope.id)

    async def report(
        self, received: Envelope, outcome: str, *, severity: str | None = None
    ) -> Envelope:
        """Report the outcome of a message this agent received (once, signed)."""
        return await self.report_message(received.sender, received.id, outcome, severity=severity)

    async def report_message(
        self, sender: str, message_id: str, outcome: str, *, severity: str | None = None
    ) -> Envelope:
        """Report the outcome of message `message_id` that `sender` sent this agent."""
        body: dict[str, Any] = {"message_id": message_id, "outcome": outcome}
        if severity is not None:
            body["severity"] = severity
        return await self.send(sender, body, kind="report")

    async def publish_raw(self, raw: bytes, *, message_id: str | None = None) -> None:
        """Publish already-encoded bytes to this agent's ingress (`ingress_exchange`);
        returns once a node confirmed them. Through an outage the same bytes are
        published again until one does (the broker routes identical copies once), for up
        to `publish_timeout` seconds; then BrokerUnavailable. A publish refused because
        the agent's lane is full is retried with growing pauses until the same deadline,
        with fewer publishes in flight (see broker/sdk/publishing.py); then Backpressure."""
        assert self._channel is not None, "call connect() first"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        pause = _PUSHBACK_FIRST_S
        while True:
            try:
                await self._window.acquire(deadline - loop.time())
            except TimeoutError:
                raise Backpressure(
                    f"no publish slot within {self._publish_timeout:g}s: this agent's "
                    f"ingress lane ({self._ingress}) keeps refusing its publishes; slow down"
                ) from None
            left = deadline - loop.time()
            confirmed: bool | None = None
            wait_s = 0.5
            try:
                attempt = min(max(left, 0.1), _ATTEMPT_S)
                await asyncio.wait_for(uncancelled(self._publish_once(raw, message_id)), attempt)
                confirmed = True
                return
            except DeliveryError as exc:
                # A nack: the lane is full (x-overflow reject-publish). Nothing was taken.
                confirmed = False
                self.pushbacks += 1
                if loop.time() + pause >= deadline:
                    raise Backpressure(
                        f"the broker refused the publish for {self._publish_timeout:g}s: "
                        f"this agent's ingress lane ({self._ingress}) is full, it sends "
                        "faster than the router takes its turn; slow down (publishing the "
                        "same bytes again later is safe)"
                    ) from exc
                wait_s = pause * random.uniform(0.5, 1.0)
                pause = min(pause * 2, _PUSHBACK_MAX_S)
            except _PUBLISH_ERRORS as exc:
                if isinstance(exc, TimeoutError):
                    # No confirm from this node in time: it may be frozen or cut off, and
                    # its connection would only be noticed dead later. Drop it; the robust
                    # connection moves on to the next node.
                    await self._drop_connection()
                if message_id is not None:
                    self.republished.add(message_id)
                if asyncio.get_running_loop().time() + 0.5 >= deadline:
                    raise BrokerUnavailable(
                        f"no RabbitMQ node confirmed the publish within "
                        f"{self._publish_timeout:g}s ({type(exc).__name__}); publishing the "
                        "same bytes again later is safe"
                    ) from exc
            finally:
                await self._window.release(confirmed)
            await asyncio.sleep(wait_s)  # the slot is free meanwhile

    async def _drop_connection(self) -> None:
        transport = getattr(self._connection, "transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.connection.close(), 2.0)

    async def _publish_once(self, raw: bytes, message_id: str | None) -> None:
        assert self._channel is not None
        exchange = await self._channel.get_exchange(self._ingress, ensure=False)
        message = aio_pika.Message(
            raw,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await exchange.publish(message, routing_key="")

    async def messages(self, *, timeout: float | None = None) -> AsyncGenerator[Received, None]:
        """Yield delivered messages (acked once the loop body moves on); stops after
        `timeout` seconds without a message, if given."""
        assert self._channel is not None, "call connect() first"
        queue = await self._channel.get_queue(self._topology.agent_queue(self.did), ensure=False)
        async with queue.iterator(timeout=timeout) as stream:
            try:
                async for message in stream:
                    received = self._accept(message)
                    if received is not None:
                        yield received
                    await message.ack()
            except TimeoutError:
                return

    async def receive(self, timeout: float) -> Received | None:
        """The next delivered message, or None after `timeout` seconds."""
        async with contextlib.aclosing(self.messages(timeout=timeout)) as stream:
            async for received in stream:
                first: Received = received
                return first
        return None

    # -- negotiation ------------------------------------------------------------------

    async def handshake(self, *, expected_broker: str | None = None, resume: bool = False) -> Proof:
        """Prove possession of this agent's key to the broker (mutually authenticated).

        With `resume`, a still-live session is confirmed without a new challenge (the
        warm path). `expected_broker` pins the broker's DID.
        """
        # The validated login is what the broker bounds pending challenges by (per agent).
        login = self.did if self.logged_in_as_self else None
        hello = {"op": "hello", "agent": self.did, "resume": resume}
        reply = await self._negotiate(hello, user_id=login)
        if reply.get("op") == "challenge":
            challenge = reply["challenge"]
            response = answer_challenge(
                self.key, challenge, self._clock(), expected_broker=expected_broker
            )
            reply = await self._negotiate({"op": "prove", "response": response})
        if reply.get("op") not in ("proved", "session"):
            raise EvidenceError(str(reply.get("message")), code=str(reply.get("code")))
        proof = check_result(reply["result"], self.did, expected_broker)
        self._broker = str(reply["result"]["broker"])
        return proof

    async def present(self, *documents: dict[str, Any]) -> dict[str, Any]:
        """Present signed evidence (credentials, attestations, bonds, manifests, pacts,
        vouches, rotations) in a presentation this agent signs for the broker; returns
        {"accepted": [ids], "refused": [{index, code, message}]}. Runs the handshake
        first when this client has not learnt the broker's DID yet."""
        if self._broker is None:
            await self.handshake()
        assert self._broker is not None
        presentation = make_presentation(
            self.key, self._broker, list(documents), now_ms=self._clock()
        )
        reply = await self._negotiate({"op": "present", "presentation": presentation})
        if reply.get("op") != "presented":
            raise EvidenceError(str(reply.get("message")), code=str(reply.get("code")))
        return reply

    async def standing(
        self, *, kind: str = "data", payment: PaymentIntent | None = None
    ) -> dict[str, Any]:
        """This agent's own standing as the broker sees it now: composite, tier, each
        dimension with its reasons, the weakest, and what the router would do with a
        message of `kind` (and `payment`) from it. Needs the agent's own AMQP login (the
        one provision created, named after its DID): the broker answers only the agent."""
        if not self.logged_in_as_self:
            raise EvidenceError(
                "standing is told only to the agent itself: connect with the AMQP login "
                "provision created for this DID",
                code="standing_unauthenticated",
            )
        request: dict[str, Any] = {"op": "standing", "agent": self.did, "kind": kind}
        if payment is not None:
            request["payment"] = payment.model_dump(exclude_none=True)
        reply = await self._negotiate(request, user_id=self.did)
        if reply.get("op") != "standing":
            raise EvidenceError(str(reply.get("message")), code=str(reply.get("code")))
        standing: dict[str, Any] = reply["standing"]
        return standing

    async def export_trust(self) -> dict[str, Any]:
        """A TrustRecordCredential about this agent from its broker, with the broker's
        status list: {"credential", "status_list"}, to present to another broker. Like
        standing, told only to the agent itself (its own AMQP login)."""
        reply = await self._negotiate({"op": "export", "agent": self.did}, user_id=self.did)
        if reply.get("op") != "exported":
            raise EvidenceError(str(reply.get("message")), code=str(reply.get("code")))
        return reply

    async def status_list(self) -> dict[str, Any]:
        """The broker's revocation list (a signed BitstringStatusListCredential)."""
        reply = await self._negotiate({"op": "status_list"})
        if reply.get("op") != "status_list":
            raise EvidenceError(str(reply.get("message")), code=str(reply.get("code")))
        credential: dict[str, Any] = reply["credential"]
        return credential

    @property
    def logged_in_as_self(self) -> bool:
        """True when the AMQP login is this agent's own (its username is its DID)."""
        return unquote(urlsplit(self._amqp_url).username or "") == self.did

    async def _negotiate(
        self, request: dict[str, Any], timeout: float = 10.0, *, user_id: str | None = None
    ) -> dict[str, Any]:
        """One request/reply on trust.handshake (RabbitMQ direct reply-to)."""
        assert self._connection is not None, "call connect() first"
        if self._handshakes is None:
            self._handshakes = RequestLine(self._connection, self._topology.handshake_exchange)
        body = await self._handshakes.request(orjson.dumps(request), timeout, user_id=user_id)
        reply: dict[str, Any] = orjson.loads(body)
        return reply

    def _accept(self, message: AbstractIncomingMessage) -> Received | None:
        try:
            decoded = decode_envelope(message.body)
        except EnvelopeError:
            return None
        env = decoded.envelope
        # Defence in depth: the router verified it, but a recipient trusts only what it
        # can check itself.
        if env.recipient != self.did or not signature_valid(decoded) or env.id in self._recent:
            return None
        self._recent[env.id] = None
        while len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        return Received(env, TrustInfo.from_headers(dict(message.headers or {})))
