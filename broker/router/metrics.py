"""Prometheus metrics of one router: decisions, latency, queues, health, cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from broker.config import BrokerConfig
from broker.core.decision import Decision
from broker.errors import ConfigError

log = logging.getLogger("broker.router.metrics")
# Without an explicit port a router takes the first free one from DEFAULT_PORT on, so
# several routers on one host each get their own /metrics instead of colliding.
DEFAULT_PORT = 9108
PORTS_TRIED = 10


class RouterMetrics:
    """One registry per router, so several routers in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "trust_decisions", "Decisions by action, tier and first reason",
            ["action", "tier", "reason"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "trust_decision_seconds", "From receiving a message to committing its outcome",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "trust_queue_messages", "Messages waiting, by queue", ["queue"], registry=self.registry
        )
        self.redis_up = Gauge("trust_redis_up", "1 when Redis answers", registry=self.registry)
        self.rabbitmq_up = Gauge(
            "trust_rabbitmq_up", "1 when the management API answers", registry=self.registry
        )
        self.paused = Gauge(
            "trust_router_paused", "1 while consumption is paused (store down)",
            registry=self.registry,
        )  # fmt: skip
        self.lanes = Gauge(
            "trust_router_lanes", "Agents' ingress lanes this router consumes",
            registry=self.registry,
        )  # fmt: skip
        self.cache_hit_ratio = Gauge(
            "trust_cache_hit_ratio", "Peer cache hits / lookups", registry=self.registry
        )
        self.replies_refused = Counter(
            "trust_handshake_replies_refused",
            "Handshake requests answered nowhere: reply_to is not RabbitMQ direct reply-to",
            registry=self.registry,
        )  # fmt: skip
        self.challenges_bounded = Counter(
            "trust_handshake_challenges_bounded",
            "Hellos that hit a bound on pending challenges: 'agent' (the agent's oldest "
            "challenge was dropped) or 'global' (refused with handshake_busy)",
            ["bound"], registry=self.registry,
        )  # fmt: skip
        self.in_doubt = Counter(
            "trust_in_doubt_retries",
            "Redelivered messages whose claim another session held, by verdict: 'route' "
            "(the holder can commit nothing more) or 'held_back' (returned to its queue "
            "while the holder might still commit)",
            ["verdict"], registry=self.registry,
        )  # fmt: skip
        self.outcomes_in_doubt = Counter(
            "trust_outcomes_in_doubt",
            "Outcomes whose commit got no commit-ok after tx.commit was sent (a node died or "
            "froze mid-commit): any part of the commit may have taken effect; each is listed "
            "by `trust-broker in-doubt`",
            registry=self.registry,
        )  # fmt: skip

    def observe(self, decision: Decision, seconds: float) -> None:
        """Count one committed decision."""
        reason = decision.reasons[0] if decision.reasons else ""
        self.decisions.labels(decision.action.value, decision.tier.value, reason).inc()
        self.latency.observe(seconds)

    def serve(self, port: int, *, explicit: bool = True) -> int:
        """Expose /metrics on 127.0.0.1 (a daemon thread) and return the port. An explicit
        port must be free; otherwise the first free one of PORTS_TRIED from `port` on."""
        candidates = [port] if explicit else list(range(port, port + PORTS_TRIED))
        for candidate in candidates:
            try:
                start_http_server(candidate, addr="127.0.0.1", registry=self.registry)
            except OSError as exc:
                taken = exc
                continue
            log.info("metrics on http://127.0.0.1:%d/metrics", candidate)
            return candidate
        ports = f"port {port}" if explicit else f"ports {port}-{port + PORTS_TRIED - 1}"
        raise ConfigError(
            f"metrics: {ports} on 127.0.0.1 in use ({taken.strerror}); pick another with "
            "--metrics-port (or TRUST_METRICS_PORT), or 0 to turn metrics off"
        )


async def poll_health(
    metrics: RouterMetrics,
    config: BrokerConfig,
    redis_ping: Callable[[], Awaitable[bool]],
    cache_stats: Callable[[], tuple[int, int]],
    stop: asyncio.Event,
    interval_s: float = 15.0,
) -> None:
    """Refresh the health, queue-depth and cache gauges until `stop` is set."""
    from broker.amqp.management import ManagementAPI

    api = ManagementAPI(config.management_url)
    topology = config.topology
    queues = (topology.ingress_queue, topology.escalations_queue, topology.blocked_stream)
    while not stop.is_set():
        metrics.redis_up.set(1 if await redis_ping() else 0)
        hits, misses = cache_stats()
        metrics.cache_hit_ratio.set(hits / (hits + misses) if hits + misses else 0.0)
        up = 1
        for name in queues:
            path = f"/api/queues/{quote(config.vhost, safe='')}/{quote(name, safe='')}"
            try:
                info = await asyncio.to_thread(api.request, "GET", path)
                metrics.queue_depth.labels(name).set(info.get("messages", 0) or 0)
            except ConfigError:
                up = 0
        metrics.rabbitmq_up.set(up)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
