"""Nemeses: the faults the suite injects, each undone by `heal`.

Every nemesis acts on real processes of the project's own servers (a 3-node RabbitMQ
cluster, Redis with a replica and Sentinels) or on the routers, and is scheduled from a
seeded random generator, so a run is reproduced by its seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from broker import cluster, servers
from broker.servers import ServerConfig


def _log(message: str) -> None:
    print(f"[nemesis {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Routers:
    """The router processes of the run; start() adds one, replace() restarts one."""

    launch: Callable[[], subprocess.Popen[bytes]]
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> subprocess.Popen[bytes]:
        """One more router."""
        process = self.launch()
        self.running.append(process)
        return process

    def live(self) -> list[subprocess.Popen[bytes]]:
        """Routers whose process has not exited."""
        return [p for p in self.running if p.poll() is None]


@dataclass
class Faults:
    """What the nemeses act on, and what heal() must put back."""

    cfg: ServerConfig
    routers: Routers
    rng: random.Random
    stopped: set[int] = field(default_factory=set)  # pids under SIGSTOP

    async def kill_router(self) -> None:
        """SIGKILL a random router; a new one takes its place after 1-4 s."""
        victim = self.rng.choice(self.routers.live())
        _log(f"kill -9 router pid {victim.pid}")
        victim.kill()
        victim.wait()
        await asyncio.sleep(self.rng.uniform(1, 4))
        self.routers.start()

    async def pause_router(self) -> None:
        """SIGSTOP a random router past the heartbeat (35-50 s), then SIGCONT."""
        victim = self.rng.choice([p for p in self.routers.live() if p.pid not in self.stopped])
        pause = self.rng.uniform(35, 50)
        _log(f"SIGSTOP router pid {victim.pid} for {pause:.0f}s")
        victim.send_signal(signal.SIGSTOP)
        self.stopped.add(victim.pid)
        await asyncio.sleep(pause)
        victim.send_signal(signal.SIGCONT)
        self.stopped.discard(victim.pid)
        _log(f"SIGCONT router pid {victim.pid}")

    async def redis_failover(self) -> None:
        """SIGKILL the Redis master; Sentinel promotes the replica; the old master comes
        back 5-10 s later (and Sentinel makes it a replica)."""
        port = cluster.master_port(self.cfg) or self.cfg.redis_port
        victim = self.cfg if port == self.cfg.redis_port else cluster.replica(self.cfg)
        _log(f"kill -9 the Redis master on :{port}")
        await asyncio.to_thread(servers.kill_redis, victim)
        await asyncio.sleep(self.rng.uniform(5, 10))
        await asyncio.to_thread(_restart_redis, victim)
        _log(f"Redis :{port} back; master now :{cluster.master_port(self.cfg)}")

    async def kill_rabbit_node(self) -> None:
        """SIGKILL one RabbitMQ node (under whatever backlog there is); restart it after
        5-10 s."""
        index = self.rng.randrange(self.cfg.nodes)
        _log(f"kill -9 RabbitMQ node {index + 1}")
        await asyncio.to_thread(cluster.kill_node, self.cfg, index)
        await asyncio.sleep(self.rng.uniform(5, 10))
        await asyncio.to_thread(cluster.start_cluster, self.cfg, _log, 180)
        _log(f"RabbitMQ node {index + 1} back")

    async def partition_node(self) -> None:
        """Cut one RabbitMQ node off for 20-30 s: SIGSTOP its VM, so its peers and every
        client see a node that accepts bytes and never answers (nothing closes), as
        behind a network partition; then SIGCONT."""
        index = self.rng.randrange(self.cfg.nodes)
        member = cluster.node(self.cfg, index)
        pid = servers._rabbit_pid(member)
        if pid is None:
            return
        pause = self.rng.uniform(20, 30)
        _log(f"partition RabbitMQ node {index + 1} (SIGSTOP pid {pid}) for {pause:.0f}s")
        os.kill(pid, signal.SIGSTOP)
        self.stopped.add(pid)
        await asyncio.sleep(pause)
        os.kill(pid, signal.SIGCONT)
        self.stopped.discard(pid)
        _log(f"partition of node {index + 1} healed")

    async def restart_cluster(self) -> None:
        """Stop every RabbitMQ node cleanly, then start them all again."""
        _log("restart the whole RabbitMQ cluster")
        await asyncio.to_thread(cluster.stop_cluster, self.cfg, _log, 120)
        await asyncio.to_thread(cluster.start_cluster, self.cfg, _log, 240)
        _log("RabbitMQ cluster back")

    def heal(self) -> None:
        """Undo every fault still in force: resume what is stopped, start what is down."""
        for pid in list(self.stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.stopped.clear()
        _restart_redis(self.cfg)
        _restart_redis(cluster.replica(self.cfg))
        cluster.start_sentinel_group(self.cfg, _log, 120)
        cluster.start_cluster(self.cfg, _log, 240)
        while len(self.routers.live()) < 2:
            self.routers.start()


def _restart_redis(cfg: ServerConfig) -> None:
    servers.start_redis(cfg, lambda _: None, 60)


NEMESES: dict[str, Callable[[Faults], Awaitable[None]]] = {
    "kill-router": Faults.kill_router,
    "pause-router": Faults.pause_router,
    "redis-failover": Faults.redis_failover,
    "kill-rabbit": Faults.kill_rabbit_node,
    "partition": Faults.partition_node,
    "restart-cluster": Faults.restart_cluster,
}
