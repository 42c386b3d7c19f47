"""Typed, frozen runtime configuration. Only the command line (broker/cli/) builds it from
the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit


def with_vhost(amqp_url: str, vhost: str) -> str:
    """The AMQP URL pointing at `vhost` (the URL path, not a keyword, selects the vhost)."""
    return urlunsplit(urlsplit(amqp_url)._replace(path="/" + quote(vhost, safe="")))


def split_urls(urls: str) -> tuple[str, ...]:
    """The node URLs of a comma-separated list (one URL is a list of one)."""
    return tuple(url.strip() for url in urls.split(",") if url.strip())


def mask_url(url: str) -> str:
    """The URL (or comma-separated URLs) with any password replaced by '***'."""
    if "," in url:
        return ",".join(mask_url(one) for one in split_urls(url))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, hosts = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{hosts}"))


@dataclass(frozen=True)
class Topology:
    """Exchange and queue names; tests give each run its own vhost instead of new names."""

    ingress_exchange: str = "trust.ingress"
    ingress_queue: str = "trust.ingress"
    deliver_exchange: str = "trust.deliver"
    # Alternate exchange of trust.deliver: a delivery nobody's queue is bound for lands
    # on the blocked stream instead of vanishing.
    undeliverable_exchange: str = "trust.undeliverable"
    blocked_stream: str = "trust.blocked"
    escalations_queue: str = "trust.escalations"
    # The router publishes records through these exchanges (bound to the stream and the
    # queue of the same names), never through the default exchange: its login may write
    # to nothing else.
    blocked_exchange: str = "trust.blocked"
    escalations_exchange: str = "trust.escalations"
    agent_queue_prefix: str = "agent."
    # Each provisioned agent publishes to its own lane: exchange trust.in.<DID> bound to
    # queue trust.lane.<DID>, which the router consumes with its own small prefetch, so
    # one sender's flood queues up in its own lane (docs/PROTOCOL.md, "Ingress lanes").
    lane_exchange_prefix: str = "trust.in."
    lane_queue_prefix: str = "trust.lane."
    handshake_exchange: str = "trust.handshake"
    handshake_queue: str = "trust.handshake"
    # Each router session holds an exclusive queue under this prefix as its lease: a
    # retry of what it claimed waits while it exists (broker/amqp/indoubt.py).
    session_queue_prefix: str = "trust.session."

    def agent_queue(self, did: str) -> str:
        """The queue an agent consumes: agent.<DID>."""
        return self.agent_queue_prefix + did

    def lane_exchange(self, did: str) -> str:
        """The exchange an agent publishes to: trust.in.<DID>."""
        return self.lane_exchange_prefix + did

    def lane_queue(self, did: str) -> str:
        """The queue behind it, which only the router reads: trust.lane.<DID>."""
        return self.lane_queue_prefix + did


@dataclass(frozen=True)
class BrokerConfig:
    """Where the servers are and how the router behaves.

    `amqp_url` and `management_url` may each list several cluster nodes, comma-separated:
    every client tries them in turn and fails over to the next. `redis_url` may name a
    Sentinel-monitored master: redis+sentinel://[:password@]host:port[,host:port]/service[/db].
    There are no default credentials: the CLI reads them from the run directory.
    """

    amqp_url: str = field(default="amqp://127.0.0.1:5672/", repr=False)
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    management_url: str = field(default="http://127.0.0.1:15672/", repr=False)
    # The admin's AMQP login (declaring the topology, provisioning); '' means amqp_url.
    admin_amqp_url: str = field(default="", repr=False)
    # The login the router answers handshakes with (direct reply-to); '' means amqp_url.
    reply_amqp_url: str = field(default="", repr=False)
    vhost: str = "/"
    key_prefix: str = "tb:"
    topology: Topology = field(default_factory=Topology)
    # Unacked ingress messages a router decides at once. Commits are grouped (one AMQP
    # transaction in flight), so a deeper window means bigger groups: 512 measured a
    # median +15 % over 128 (docs/PERFORMANCE.md section 7).
    prefetch: int = 512
    # Unacked messages a router holds from each agent's lane. Small, so a flooding lane
    # never has more than this many messages ahead of anyone else's in the router; it
    # also caps one sender's own rate (docs/PERFORMANCE.md, "Fairness under a flood").
    lane_prefetch: int = 16
    dedup_ttl_ms: int = 3_600_000
    # Flight-recorder traces (about 1.1 KB per routed message) live this long in Redis;
    # blocked and escalated messages keep their full record on their streams regardless.
    trace_ttl_ms: int = 86_400_000
    cache_size: int = 100_000
    cache_ttl_ms: int = 2_000
    store_retry_ms: int = 500
    # The broker's own did:key (signs handshake challenges); created on first start.
    broker_key_file: str = ".run/broker.key"
    # Prometheus /metrics on 127.0.0.1; 0 turns it off.
    metrics_port: int = 0
    # Deadlines. Every wait on RabbitMQ has one: a commit that has not answered within
    # commit_timeout_ms gives its messages back (the channel is dropped, so the broker
    # requeues them) instead of holding every later commit behind it. Giving a commit up
    # is the last resort, not the first: its frames may be in a frozen node's buffer, or
    # its commit-ok waiting on a queue leader being re-elected, and dropping the channel
    # then can let a publish land without its ack (the message comes twice). 30 s rides
    # out a re-election and a node frozen for up to about that (aiormq itself drops a
    # connection silent for 3 heartbeats, 33 s).
    commit_timeout_ms: int = 30_000
    # Connecting, declaring and other single AMQP round trips.
    amqp_timeout_ms: int = 10_000
    # AMQP heartbeat: RabbitMQ drops the connection of a router that stopped answering
    # (SIGSTOP, a frozen VM) after about two of these, and requeues what it held.
    heartbeat_s: int = 10
    # The router's own watchdog: an event loop that did not run for this long (the
    # process was paused) gives back everything it holds rather than commit late.
    stall_ms: int = 5_000
    # A redelivered message whose holder (another session) may still commit it waits up
    # to in_doubt_hold_ms in the router, then goes back to its queue; one first claimed
    # longer than in_doubt_max_ms ago is routed whatever the holder (broker/amqp/indoubt.py).
    in_doubt_hold_ms: int = 10_000
    in_doubt_max_ms: int = 300_000

    @property
    def amqp_vhost_url(self) -> str:
        """The first AMQP node URL, pointed at this configuration's vhost."""
        return self.amqp_vhost_urls[0]

    @property
    def amqp_vhost_urls(self) -> tuple[str, ...]:
        """Every AMQP node URL, pointed at this configuration's vhost."""
        return tuple(with_vhost(url, self.vhost) for url in split_urls(self.amqp_url))

    @property
    def admin_url(self) -> str:
        """The admin's AMQP URL(s): admin_amqp_url, or amqp_url when there is none."""
        return self.admin_amqp_url or self.amqp_url

    @property
    def management_urls(self) -> tuple[str, ...]:
        """Every management API URL (one per node)."""
        return split_urls(self.management_url)

    def __repr__(self) -> str:
        return (
            f"BrokerConfig(amqp_url={mask_url(self.amqp_url)!r}, "
            f"redis_url={mask_url(self.redis_url)!r}, vhost={self.vhost!r}, "
            f"key_prefix={self.key_prefix!r}, prefetch={self.prefetch})"
        )
