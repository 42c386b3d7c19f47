"""A second RabbitMQ + Redis pair (own run_dir, own ports), started and stopped by devkit."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
import redis
from aiormq.abc import FieldTable

from broker.devkit import credentials, servers
from broker.devkit.install import ensure_installed
from broker.devkit.layout import ServerConfig
from broker.devkit.rabbitmq_server import start_rabbitmq, stop_rabbitmq
from broker.devkit.redis_server import kill_redis, start_redis, stop_redis

pytestmark = pytest.mark.integration


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open together so none is handed out twice)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _listening(port: int) -> bool:
    """Whether anything accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _section(cfg: ServerConfig, name: str) -> dict[str, object]:
    """One server's part of status()."""
    section = servers.status(cfg)[name]
    assert isinstance(section, dict)
    return section


def _progress(message: str) -> None:
    """Show progress in pytest's captured output."""
    print(f"[servers] {message}")


@pytest.fixture(scope="module")
def cfg() -> Iterator[ServerConfig]:
    """A freshly started, separate server pair; stopped and deleted afterwards."""
    ensure_installed(_progress)
    # Not tmp_path: pytest makes it mode 0700, which the rabbitmq/redis users cannot enter.
    run_dir = Path(tempfile.mkdtemp(prefix="trust-servers-test-"))
    run_dir.chmod(0o755)
    amqp, dist, management, redis_port = _free_ports(4)
    config = ServerConfig(
        run_dir=run_dir,
        amqp_port=amqp,
        dist_port=dist,
        management_port=management,
        redis_port=redis_port,
        node_name=f"trusttest{os.getpid()}@localhost",
    )
    try:
        servers.start(config, _progress, timeout=90)
        yield config
    finally:
        servers.stop(config, _progress)
        shutil.rmtree(run_dir, ignore_errors=True)


def _creds(cfg: ServerConfig) -> credentials.Credentials:
    """The logins the servers generated on first start."""
    found = credentials.load(cfg.run_dir)
    assert found is not None
    return found


def _redis(cfg: ServerConfig) -> redis.Redis:
    """A client for the test instance's Redis (with the generated password)."""
    password = _creds(cfg).redis_password
    return redis.Redis(host="127.0.0.1", port=cfg.redis_port, socket_timeout=5, password=password)


def _amqp(cfg: ServerConfig, user: str = "", password: str = "") -> str:
    creds = _creds(cfg)
    login = f"{user or creds.admin_user}:{password or creds.admin_password}"
    return f"amqp://{login}@127.0.0.1:{cfg.amqp_port}/"


async def test_no_default_credentials(cfg: ServerConfig) -> None:
    """No guest in RabbitMQ, no password-less Redis; the generated logins work, and the
    credentials file is readable by its owner only."""
    path = credentials.path_in(cfg.run_dir)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{cfg.amqp_port}/", timeout=10)
    bare = redis.Redis(host="127.0.0.1", port=cfg.redis_port, socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):
            bare.get("anything")
    finally:
        bare.close()
    creds = _creds(cfg)
    for user, secret in ((creds.admin_user, creds.admin_password),
                         (creds.router_user, creds.router_password)):  # fmt: skip
        conn = await aio_pika.connect(_amqp(cfg, user, secret), timeout=10)
        await conn.close()


def test_rotate_changes_every_password(cfg: ServerConfig) -> None:
    """`rotate` puts new passwords in force and in the file; the old ones stop working."""
    before = _creds(cfg)
    servers.rotate(cfg, _progress)
    after = _creds(cfg)
    assert before.admin_password != after.admin_password
    assert before.redis_password != after.redis_password
    old = redis.Redis(host="127.0.0.1", port=cfg.redis_port, password=before.redis_password)
    try:
        with pytest.raises(redis.AuthenticationError):
            old.ping()
    finally:
        old.close()
    assert _redis(cfg).ping() is True


async def test_start_makes_both_answer(cfg: ServerConfig) -> None:
    """Redis answers PING and RabbitMQ accepts AMQP logins and stream queues."""
    client = _redis(cfg)
    try:
        assert client.ping() is True
    finally:
        client.close()
    conn = await aio_pika.connect(_amqp(cfg), timeout=10)
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(
            "servers-test.stream", durable=True, arguments={"x-queue-type": "stream"}
        )
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await conn.close()


def test_status_reports_running(cfg: ServerConfig) -> None:
    """status() sees both servers of this instance with their ports."""
    rabbit = _section(cfg, "rabbitmq")
    assert (rabbit["running"], rabbit["amqp_port"], rabbit["node_name"]) == (
        True,
        cfg.amqp_port,
        cfg.node_name,
    )
    assert (_section(cfg, "redis")["running"], _section(cfg, "redis")["port"]) == (
        True,
        cfg.redis_port,
    )


def test_start_again_is_a_quick_no_op(cfg: ServerConfig) -> None:
    """A second start() finds both servers running and keeps the same processes."""
    before = servers.status(cfg)
    started = time.monotonic()
    servers.start(cfg, _progress)
    assert time.monotonic() - started < 15
    assert servers.status(cfg) == before


def test_redis_restart_keeps_data(cfg: ServerConfig) -> None:
    """A key written before stop_redis is still there after start_redis (append-only file)."""
    client = _redis(cfg)
    client.set("servers-test:key", "survives")
    client.close()
    stop_redis(cfg, _progress)
    assert not _listening(cfg.redis_port)
    stop_redis(cfg, _progress)  # idempotent
    start_redis(cfg, _progress)
    client = _redis(cfg)
    try:
        assert client.get("servers-test:key") == b"survives"
    finally:
        client.close()


def test_kill_redis_loses_no_acknowledged_write(cfg: ServerConfig) -> None:
    """After SIGKILL and restart, the last acknowledged write is still there."""
    client = _redis(cfg)
    client.set("servers-test:killed", "kept")
    client.close()
    kill_redis(cfg)
    assert _section(cfg, "redis")["running"] is False
    start_redis(cfg, _progress)
    client = _redis(cfg)
    try:
        assert client.get("servers-test:killed") == b"kept"
    finally:
        client.close()


async def test_rabbitmq_restart_keeps_stream_messages(cfg: ServerConfig) -> None:
    """A message confirmed into a stream before stop_rabbitmq is readable after start_rabbitmq."""
    url = _amqp(cfg)
    args: FieldTable = {"x-queue-type": "stream"}
    conn = await aio_pika.connect(url, timeout=10)
    async with conn:
        channel = await conn.channel()  # publisher confirms are on by default
        await channel.declare_queue("servers-test.restart", durable=True, arguments=args)
        message = aio_pika.Message(
            b"before-restart", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await channel.default_exchange.publish(message, routing_key="servers-test.restart")
    stop_rabbitmq(cfg, _progress)
    assert not _listening(cfg.amqp_port)
    start_rabbitmq(cfg, _progress)
    conn = await aio_pika.connect(url, timeout=10)
    async with conn:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=1)  # stream consumers must set a prefetch
        queue = await channel.declare_queue("servers-test.restart", durable=True, arguments=args)
        async with queue.iterator(arguments={"x-stream-offset": "first"}) as messages:
            async for incoming in messages:
                await incoming.ack()
                assert incoming.body == b"before-restart"
                break
        await queue.delete(if_unused=False, if_empty=False)


def test_stop_leaves_nothing_listening(cfg: ServerConfig) -> None:
    """stop() closes every port of the instance, reports stopped, and may be repeated."""
    servers.stop(cfg, _progress)
    ports = (cfg.amqp_port, cfg.dist_port, cfg.management_port, cfg.redis_port)
    assert [port for port in ports if _listening(port)] == []
    assert _section(cfg, "rabbitmq")["running"] is False
    assert _section(cfg, "redis")["running"] is False
    servers.stop(cfg, _progress)
