"""Trust negotiation over AMQP: request/reply on the `trust.handshake` queue.

Requests are JSON objects with an `op`:
- `hello` {agent, resume?}: a broker-signed challenge, or, with `resume` and a live
  session, a broker-signed session result without a new challenge (the warm path).
- `prove` {response}: the agent's signed answer; on success possession is recorded.
- `export` {agent}: a TrustRecordCredential about the agent, only to the agent itself (its
  AMQP user_id), with this broker's status list; `status_list` {}: the status list alone.
- `present` {presentation}: a presentation signed by the presenting agent
  (`broker.core.presentation.make_presentation`) carrying issuer-signed credentials,
  attestations and bonds, agent-signed capability manifests, pacts signed by both
  parties, vouches and key rotations, each about the presenter.
Replies go to the request's `reply_to` with its `correlation_id`, and only when that is
RabbitMQ direct reply-to (`amq.rabbitmq.reply-to...`): the negotiator's login may write
to the default exchange, which reaches every queue by name, so a request naming any other
`reply_to` (an agent's queue, trust.blocked, trust.escalations) is refused unanswered and
counted (`trust_handshake_replies_refused`), never published. Nor is a direct reply-to
name RabbitMQ could not have made: publishing to a forged one (a truncated or foreign
pid, a node label no cluster node has) makes RabbitMQ 3.10 close the publisher's whole
connection (INTERNAL_ERROR), which would end the router's session. A name must have the
exact shape RabbitMQ writes, and its node label must be one RabbitMQ accepted when probed
on a throwaway connection (a few per login; learnt once per node). Every failure has a
code; nothing here trusts what it cannot verify.

Pending challenges are bounded per agent, and "the agent" is the AMQP login RabbitMQ
validated (`user_id`), never a DID the request names: a hello beyond the agent's
`max_pending_per_agent` drops that agent's oldest pending challenge (an agent can never
lock itself or anyone else out), and the global `max_pending` stays as the last resort
(`handshake_busy`). Requests without a user_id share one bucket.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from broker.amqp.errors import AMQP_ERRORS
from broker.config import BrokerConfig
from broker.core.canonical import loads_strict
from broker.core.handshake import (
    Proof,
    check_response,
    error_reply,
    make_challenge,
    make_result,
)
from broker.core.identity import AgentKey, public_key_from_did
from broker.core.presentation import open_presentation
from broker.errors import EnvelopeError, EvidenceError, IdentityError, StoreUnavailable
from broker.federation.export import FEDERATION_OPS, federation_request
from broker.router.agreements import apply_document
from broker.router.metrics import RouterMetrics
from broker.store.once import Issued
from broker.store.redis import RedisStore

log = logging.getLogger("broker.router.negotiation")
MAX_REQUEST_BYTES = 64 * 1024
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
# Requests that carry no validated login share this challenge bucket.
UNIDENTIFIED = "-"
# What RabbitMQ writes for direct reply-to: the channel's pid in the external term
# format (NEW_PID_EXT, node 'reply@<hash>'), then a 16-byte key, both base64.
_DIRECT_NAME = re.compile(
    r"amq\.rabbitmq\.reply-to\.([A-Za-z0-9+/]{8,120}={0,2})\.([A-Za-z0-9+/]{22}==)"
)
_REPLY_NODE = re.compile(rb"reply@[0-9]{1,10}")
# Unknown node labels probed per login, and at most one probe at a time for everyone.
PROBES_PER_LOGIN = 3
MAX_KNOWN_NODES = 64
Handler = Callable[[dict[str, Any], int, str | None], Awaitable[dict[str, Any]]]


class NegotiationService:
    """Answers handshake and evidence requests for every agent, from any router."""

    def __init__(
        self,
        config: BrokerConfig,
        store: RedisStore,
        broker_key: AgentKey,
        clock: Callable[[], int],
        *,
        challenge_ttl_ms: int = 30_000,
        session_ms: int = 3_600_000,
        max_pending: int = 10_000,
        max_pending_per_agent: int = 8,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self.broker_key = broker_key
        self._clock = clock
        self._challenge_ttl_ms = challenge_ttl_ms
        self._session_ms = session_ms
        self._max_pending = max_pending
        self._max_pending_per_agent = max_pending_per_agent
        self._metrics = metrics
        self._channel: AbstractChannel | None = None
        self.refused_replies = 0
        self._probe_url: str | None = None
        self._nodes: set[bytes] = set()  # node labels RabbitMQ accepted
        self._foreign: OrderedDict[bytes, None] = OrderedDict()  # and those it refused
        self._probes: OrderedDict[str, int] = OrderedDict()  # probes used, by login
        self._probing = asyncio.Lock()
        self._ops: dict[str, Handler] = {
            "hello": self._hello,
            "prove": self._prove,
            "present": self._present,
        }

    async def start(self, connection: AbstractConnection) -> None:
        """Declare the handshake exchange and queue and start answering."""
        self._channel = await connection.channel()
        self._probe_url = str(getattr(connection, "url", "") or "") or None
        await self._channel.set_qos(prefetch_count=64)
        # Declared by the admin (broker.amqp.topology.declare_router_topology): checked only.
        queue = await self._channel.get_queue(self._config.topology.handshake_queue, ensure=True)
        await queue.consume(self._on_request)

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        if not await self._answerable(message.reply_to, message.user_id):
            # Not answered, not even handled: nothing is issued for a reply nobody gets.
            self.refused_replies += 1
            if self._metrics is not None:
                self._metrics.replies_refused.inc()
            log.warning(
                "handshake request refused: reply_to %.80r is not direct reply-to (login %.80r)",
                message.reply_to, message.user_id,
            )  # fmt: skip
            with contextlib.suppress(*AMQP_ERRORS):
                await message.ack()
            return
        try:
            reply = await self.handle(message.body, user_id=message.user_id)
        except StoreUnavailable:
            # Fail closed like the router: the agent retries; nothing is recorded half-way.
            reply = {"op": "error", "code": "store_unavailable", "message": "try again shortly"}
        await self._reply(message, reply)
        with contextlib.suppress(*AMQP_ERRORS):
            await message.ack()

    async def handle(self, body: bytes, *, user_id: str | None = None) -> dict[str, Any]:
        """Answer one request (also used directly by tests of the protocol). `user_id` is
        the AMQP login that published it, as RabbitMQ validated it."""
        if len(body) > MAX_REQUEST_BYTES:
            return error_reply(
                "request_too_large", f"requests are at most {MAX_REQUEST_BYTES} bytes"
            )
        try:
            request = loads_strict(body)
        except orjson.JSONDecodeError:
            return error_reply("malformed", "request is not JSON")
        except EnvelopeError as exc:  # a duplicate key: readers would disagree on it
            return error_reply("malformed", str(exc))
        if isinstance(request, dict) and request.get("op") == "standing":
            return await self._standing(request, self._clock(), user_id)
        if isinstance(request, dict) and request.get("op") in FEDERATION_OPS:
            return await federation_request(
                self._store, self.broker_key, request, self._clock(), user_id
            )
        if not isinstance(request, dict) or request.get("op") not in self._ops:
            return error_reply("malformed", f"op must be one of {sorted(self._ops)}")
        try:
            return await self._ops[request["op"]](request, self._clock(), user_id)
        except EvidenceError as exc:
            log.info("negotiation refused: %s", exc.code)
            return error_reply(exc.code, str(exc))
        except IdentityError as exc:
            return error_reply("bad_did", str(exc))

    async def _hello(
        self, request: dict[str, Any], now: int, user_id: str | None
    ) -> dict[str, Any]:
        agent = request.get("agent")
        if not isinstance(agent, str):
            return error_reply("malformed", "hello needs the agent's DID")
        public_key_from_did(agent)
        if request.get("resume"):
            peer = await self._store.peer(agent, now)
            expires = peer.possession_expires_ms
            if peer.possession_verified_ms is not None and expires is not None and expires > now:
                # The warm path: the session is still live, no new challenge needed.
                result = make_result(
                    self.broker_key,
                    Proof(agent, peer.possession_verified_ms, expires),
                    challenge="",
                )
                return {"op": "session", "result": result}
        random32 = os.urandom(32)
        challenge = make_challenge(self.broker_key, agent, random32, now, self._challenge_ttl_ms)
        expires = challenge["expires_at"]
        issued = await self._store.issue_challenge(
            random32.hex(), agent, expires, now, self._max_pending,
            bucket=user_id or UNIDENTIFIED, per_bucket=self._max_pending_per_agent,
        )  # fmt: skip
        if issued is not Issued.OK and self._metrics is not None:
            self._metrics.challenges_bounded.labels(
                "global" if issued is Issued.BUSY else "agent"
            ).inc()
        if issued is Issued.BUSY:
            return error_reply("handshake_busy", "too many pending challenges; try again shortly")
        return {"op": "challenge", "challenge": challenge}

    async def _prove(
        self, request: dict[str, Any], now: int, user_id: str | None
    ) -> dict[str, Any]:
        response = request.get("response")
        if not isinstance(response, dict) or not isinstance(response.get("challenge"), str):
            return error_reply("handshake_malformed", "prove needs the signed response document")
        pending = await self._store.take_challenge(response["challenge"])
        proof = check_response(response, self.broker_key.did, pending, now, self._session_ms)
        await self._store.record_possession(proof.agent, proof.verified_ms, proof.expires_ms)
        log.info("proof of key possession recorded for %s", proof.agent)
        return {
            "op": "proved",
            "result": make_result(self.broker_key, proof, response["challenge"]),
        }

    async def _present(
        self, request: dict[str, Any], now: int, user_id: str | None
    ) -> dict[str, Any]:
        # Bound to its presenter by the presenter's own signature, so nobody can present
        # (or replay) documents in another agent's name.
        skew = (await self._store.load_policy()).gates.max_clock_skew_ms
        presentation_id, presenter, documents = open_presentation(
            request.get("presentation"), self.broker_key.did, now, skew
        )
        # Single use per presenter: nobody can burn the ids another agent will present.
        if not await self._store.mark_presentation(f"{presenter}|{presentation_id}", 2 * skew):
            return error_reply("presentation_replay", "this presentation was already presented")
        accepted: list[str] = []
        refused: list[dict[str, Any]] = []
        for index, document in enumerate(documents):
            try:
                accepted.append(await apply_document(self._store, document, now, presenter))
            except EvidenceError as exc:
                refused.append({"index": index, "code": exc.code, "message": str(exc)})
        return {"op": "presented", "accepted": accepted, "refused": refused}

    async def _standing(
        self, request: dict[str, Any], now: int, user_id: str | None
    ) -> dict[str, Any]:
        # Told only to the agent itself: RabbitMQ rejects a user_id other than the login.
        from broker.peerview import standing_request

        return await standing_request(self._store, request, now, user_id)

    async def _answerable(self, reply_to: str | None, login: str | None) -> bool:
        """True when `reply_to` is a direct reply-to name on a node RabbitMQ knows."""
        node = reply_node(reply_to)
        if node is None:
            return False
        if node in self._nodes:
            return True
        if node in self._foreign or len(self._nodes) >= MAX_KNOWN_NODES:
            return False
        who = login or UNIDENTIFIED
        async with self._probing:  # one probe at a time; a login pays only for its own
            if node in self._nodes or node in self._foreign:
                return node in self._nodes
            used = self._probes.get(who, 0)
            if used >= PROBES_PER_LOGIN or self._probe_url is None:
                return False
            self._probes[who] = used + 1
            self._probes.move_to_end(who)
            while len(self._probes) > 10_000:
                self._probes.popitem(last=False)
            known = await self._probe(node)
            if known is None:  # RabbitMQ could not be asked: neither answer is remembered
                self._probes[who] = used
            elif known:
                self._nodes.add(node)
            else:
                self._foreign[node] = None
                while len(self._foreign) > 1024:
                    self._foreign.popitem(last=False)
        return node in self._nodes

    async def _probe(self, node: bytes) -> bool | None:
        """Ask RabbitMQ whether it knows `node`, on a throwaway connection: it closes the
        connection of a publish to a direct reply-to name on a node it does not know.
        None when no connection could be opened (nothing learnt)."""
        assert self._probe_url is not None
        pid = b"\x83Xv" + len(node).to_bytes(2, "big") + node + (0).to_bytes(8, "big")
        pid += (1).to_bytes(4, "big")
        name = f"{DIRECT_REPLY_TO}.{base64.b64encode(pid).decode()}."
        name += base64.b64encode(os.urandom(16)).decode()
        started = time.monotonic()
        try:
            connection = await aio_pika.connect(self._probe_url, timeout=5)
        except AMQP_ERRORS:
            return None
        try:
            async with connection:
                channel = await connection.channel(publisher_confirms=False)
                await channel.default_exchange.publish(
                    aio_pika.Message(b""), routing_key=name, mandatory=False
                )
                # Synchronous, on the same channel, so it is answered after the publish.
                await channel.set_qos(prefetch_count=1)
                known = not connection.is_closed
        except AMQP_ERRORS:
            known = False
        log.info(
            "direct reply-to node %r %s (probed in %.0f ms)",
            node.decode(), "known" if known else "refused", (time.monotonic() - started) * 1000,
        )  # fmt: skip
        return known

    async def _reply(self, request: AbstractIncomingMessage, reply: dict[str, Any]) -> None:
        # Checked again here, so no path can ever answer anywhere but direct reply-to on a
        # node RabbitMQ accepted.
        reply_to = request.reply_to
        node = reply_node(reply_to)
        if reply_to is None or node not in self._nodes or self._channel is None:
            return
        message = aio_pika.Message(
            orjson.dumps(reply),
            correlation_id=request.correlation_id,
            content_type="application/json",
        )
        with contextlib.suppress(*AMQP_ERRORS):
            await self._channel.default_exchange.publish(message, routing_key=reply_to)


def reply_node(reply_to: str | None) -> bytes | None:
    """The node label (`reply@<hash>`) of a direct reply-to name in exactly the shape
    RabbitMQ writes when it rewrites `amq.rabbitmq.reply-to` for a consuming channel, or
    None for anything else (including the bare pseudo-queue name, which RabbitMQ never
    passes on)."""
    if not isinstance(reply_to, str):
        return None
    match = _DIRECT_NAME.fullmatch(reply_to)
    if match is None:
        return None
    try:
        pid = base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(pid) < 5 or pid[:3] != b"\x83Xv":
        return None
    size = int.from_bytes(pid[3:5], "big")
    node = pid[5 : 5 + size]
    if len(pid) != 5 + size + 12 or not _REPLY_NODE.fullmatch(node):
        return None
    return node


def is_direct_reply_to(reply_to: str | None) -> bool:
    """True for a direct reply-to name in the shape RabbitMQ writes (see reply_node)."""
    return reply_node(reply_to) is not None
