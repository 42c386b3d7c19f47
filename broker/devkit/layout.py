"""One local RabbitMQ + Redis pair: its settings, the files it keeps under its run
directory, and the error every devkit step raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.errors import TrustBrokerError

Progress = Callable[[str], None]

START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
RABBITMQ_USER = "rabbitmq"
REDIS_USER = "redis"
DOCKER_HINT = "or use `docker compose up` on a machine with Docker"


@dataclass(frozen=True)
class ServerConfig:
    """Where (run_dir) and on which ports one local RabbitMQ + Redis pair runs."""

    run_dir: Path
    amqp_port: int = 5672
    dist_port: int = 25672
    management_port: int = 15672
    redis_port: int = 6379
    node_name: str = "trustbroker@localhost"
    # RabbitMQ nodes clustered together; node i (from 0) listens on amqp_port + i,
    # management_port + i and dist_port + i.
    nodes: int = 1
    # A Redis replica on redis_port + 1 and three Sentinels on sentinel_port .. + 2.
    sentinel: bool = False
    sentinel_port: int = 0  # 0: redis_port + 20000
    # Where credentials.json lives when not in run_dir (the extra nodes of a cluster
    # share the first node's).
    secrets_dir: Path | None = None

    @property
    def amqp_ports(self) -> tuple[int, ...]:
        """The AMQP port of every node."""
        return tuple(self.amqp_port + i for i in range(self.nodes))

    @property
    def management_ports(self) -> tuple[int, ...]:
        """The management API port of every node."""
        return tuple(self.management_port + i for i in range(self.nodes))

    @property
    def sentinel_ports(self) -> tuple[int, ...]:
        """The three Sentinels' ports (empty without Sentinel)."""
        if not self.sentinel:
            return ()
        first = self.sentinel_port or self.redis_port + 20000
        return (first, first + 1, first + 2)


# The name Sentinel monitors the master under (redis+sentinel://.../<this>/0).
SENTINEL_SERVICE = "trustbroker"


class ServersError(TrustBrokerError):
    """A local server could not be installed, started or stopped."""


def creds_dir(cfg: ServerConfig) -> Path:
    """Where credentials.json lives (a cluster's extra nodes share the first node's)."""
    return (cfg.secrets_dir or cfg.run_dir).resolve()


@dataclass(frozen=True)
class Layout:
    """Absolute paths of every file one server pair keeps under its run_dir."""

    root: Path
    node_name: str

    @classmethod
    def of(cls, cfg: ServerConfig) -> Layout:
        """Resolve the layout; absolute because the servers run with another working directory."""
        return cls(cfg.run_dir.resolve(), cfg.node_name)

    @property
    def rabbit(self) -> Path:
        """Directory owned by the rabbitmq user."""
        return self.root / "rabbitmq"

    @property
    def rabbit_home(self) -> Path:
        """HOME of the server and its CLI, so both read this instance's Erlang cookie."""
        return self.rabbit / "home"

    @property
    def mnesia(self) -> Path:
        """RABBITMQ_MNESIA_BASE: message store, queues, streams."""
        return self.rabbit / "mnesia"

    @property
    def rabbit_logs(self) -> Path:
        """RABBITMQ_LOG_BASE."""
        return self.rabbit / "log"

    @property
    def rabbit_log(self) -> Path:
        """The node's own log file inside RABBITMQ_LOG_BASE."""
        return self.rabbit_logs / f"{self.node_name}.log"

    @property
    def rabbit_startup_log(self) -> Path:
        """stdout/stderr of rabbitmq-server (errors before the node log exists land here)."""
        return self.rabbit_logs / "startup.log"

    @property
    def rabbit_pid(self) -> Path:
        """RABBITMQ_PID_FILE, written by the node while booting."""
        return self.rabbit / "rabbitmq.pid"

    @property
    def redis(self) -> Path:
        """Directory owned by the redis user."""
        return self.root / "redis"

    @property
    def redis_data(self) -> Path:
        """Redis `dir`: the append-only file lives here."""
        return self.redis / "data"

    @property
    def redis_pid(self) -> Path:
        """Redis pidfile."""
        return self.redis / "redis.pid"

    @property
    def redis_log(self) -> Path:
        """Redis logfile."""
        return self.redis / "redis.log"

    @property
    def redis_startup_log(self) -> Path:
        """stdout/stderr of redis-server before it daemonizes (config errors)."""
        return self.redis / "startup.log"
