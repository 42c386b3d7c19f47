"""Pure parts of cluster support: node URL lists, heartbeats, generated credentials, and
the committer's refusal to report a commit it never made."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from yarl import URL

from broker.amqp.committer import CommitFailed, TransactionalCommitter
from broker.amqp.failover import RotatingRobustConnection, with_heartbeat
from broker.config import Topology
from broker.devkit import credentials
from broker.ops.provision import negotiator_permissions, router_permissions


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://u:p@h:1/v", "amqp://u:p@h:1/v?heartbeat=10"),
        ("amqp://u:p@h:1/v?heartbeat=3", "amqp://u:p@h:1/v?heartbeat=3"),
        ("amqp://h:1/?name=x", "amqp://h:1/?name=x&heartbeat=10"),
    ],
)
def test_a_heartbeat_is_asked_for_unless_the_url_names_one(url: str, expected: str) -> None:
    assert with_heartbeat(url, 10) == expected


async def test_the_robust_connection_hands_out_the_nodes_in_turn() -> None:
    connection = RotatingRobustConnection(URL("amqp://u:p@a:1/"))
    connection.use_nodes(["amqp://u:p@a:1/", "amqp://u:p@b:2/", "amqp://u:p@c:3/"])
    assert [connection.url.host for _ in range(4)] == ["a", "b", "c", "a"]
    assert "p@" not in str(connection)


def test_credentials_are_generated_once_private_and_never_in_repr(tmp_path: Path) -> None:
    first = credentials.load_or_create(tmp_path)
    assert credentials.load_or_create(tmp_path) == first
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert first.admin_password not in repr(first)
    assert len({first.admin_password, first.router_password, first.redis_password}) == 3
    rotated = first.rotated()
    assert rotated.admin_user == first.admin_user and rotated.admin_password != first.admin_password


def test_generated_passwords_never_look_like_a_command_line_option() -> None:
    # rabbitmqctl add_user USER PASSWORD read a password starting with '-' as an option
    # and the servers failed to start (URL-safe base64 starts with '-' once in 64).
    passwords = [p for _ in range(1_000) for p in _passwords(credentials.Credentials.generate())]
    assert not [p for p in passwords if p.startswith("-")]
    assert all(len(p) >= 32 for p in passwords)


def _passwords(creds: credentials.Credentials) -> list[str]:
    return [creds.admin_password, creds.router_password, creds.negotiator_password,
            creds.redis_password]  # fmt: skip


def test_the_router_may_write_only_where_an_outcome_goes() -> None:
    perms = router_permissions(Topology())
    import re

    # It may declare only its sessions' leases (exclusive queues), nothing else.
    assert re.fullmatch(perms["configure"], "trust.session.0f3a9c")
    for name in ("trust.ingress", "trust.session.", "trust.session.x.y", "agent.did:key:z6Mk"):
        assert not re.fullmatch(perms["configure"], name)
    allowed = ["trust.deliver", "trust.blocked", "trust.escalations"]
    refused = ["", "amq.default", "trust.ingress", "agent.did:key:z6Mk", "trust.handshake"]
    assert all(re.fullmatch(perms["write"], name) for name in allowed)
    assert not any(re.fullmatch(perms["write"], name) for name in refused)
    replies = negotiator_permissions(Topology())
    assert re.fullmatch(replies["write"], "amq.default")
    assert not re.fullmatch(replies["write"], "trust.deliver")


class _Closed:
    """A message whose channel is gone (what aio-pika reports for one)."""

    delivery_tag = 1

    @property
    def channel(self) -> object:
        from aio_pika.exceptions import ChannelInvalidStateError

        raise ChannelInvalidStateError("closed")


class _Channel:
    def __init__(self, underlay: object) -> None:
        self._underlay = underlay

    async def get_underlay_channel(self) -> object:
        return self._underlay


async def test_a_commit_that_cannot_answer_in_time_fails_and_breaks_the_committer() -> None:
    import aiormq

    class Hanging(aiormq.Channel):
        def __init__(self) -> None:  # no connection needed: nothing is sent
            pass

        async def tx_select(self, timeout: object = None) -> aiormq.spec.Tx.SelectOk:
            await asyncio.sleep(3600)
            raise AssertionError("the committer's deadline cancels this sleep")

    broken: list[str] = []
    committer = TransactionalCommitter(
        _Channel(Hanging()),  # type: ignore[arg-type]  # a stand-in: only its underlay is used
        timeout_s=0.2,
        on_broken=broken.append,
    )
    with pytest.raises(CommitFailed):
        await committer.commit(_Closed(), None)  # type: ignore[arg-type]
    assert committer.broken and broken
    with pytest.raises(CommitFailed):  # and stays broken: the owner drops the channel
        await committer.commit(_Closed(), None)  # type: ignore[arg-type]


async def test_a_confirm_cancelled_by_a_closing_connection_is_a_connection_error() -> None:
    from broker.sdk.publishing import ConnectionLost, uncancelled

    async def confirm_cancelled() -> None:
        raise asyncio.CancelledError  # what aiormq does to a pending confirm on close

    with pytest.raises(ConnectionLost):
        await uncancelled(confirm_cancelled())
    # A real cancellation of the caller still cancels (wait_for's deadline relies on it).
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(uncancelled(asyncio.sleep(10)), 0.05)
