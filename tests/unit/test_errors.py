"""One error tree, and library errors translated at the boundary (map_exceptions)."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.amqp.committer import CommitFailed
from broker.amqp.errors import (
    AMQP_ERRORS,
    CHANNEL_ERRORS,
    CONNECT_ERRORS,
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
)
from broker.amqp.failover import NoNodeAvailable
from broker.amqp.indoubt import HeldBack
from broker.devkit.layout import ServersError
from broker.errors import (
    BrokerUnavailable,
    ReviewError,
    StoreUnavailable,
    TrustBrokerError,
    map_exceptions,
)
from broker.ops.amqp import TO_REVIEW_ERROR, amqp_errors
from broker.sdk.publishing import ConnectionLost
from broker.store.base import TO_STORE_UNAVAILABLE


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize(
    ("mapping", "raised", "becomes"),
    [
        pytest.param(TO_STORE_UNAVAILABLE, RedisConnectionError("x"), StoreUnavailable,
                     id="redis-error"),
        pytest.param(TO_STORE_UNAVAILABLE, ConnectionResetError(), StoreUnavailable,
                     id="socket-under-redis"),
        pytest.param(TO_REVIEW_ERROR, AMQPError("gone"), ReviewError, id="amqp-error"),
        pytest.param(TO_REVIEW_ERROR, TimeoutError(), ReviewError, id="amqp-timeout"),
        pytest.param(TO_REVIEW_ERROR, ChannelInvalidStateError("closed"), ReviewError,
                     id="closed-channel"),
    ],
)  # fmt: skip
def test_a_library_error_becomes_the_brokers_with_its_cause(
    mapping: dict[type[Exception], object],
    raised: Exception,
    becomes: type[Exception],
) -> None:
    with pytest.raises(becomes) as caught, map_exceptions(mapping):  # type: ignore[arg-type]
        _raise(raised)
    assert caught.value.__cause__ is raised
    assert isinstance(caught.value, TrustBrokerError)


def test_other_errors_pass_through_untouched() -> None:
    bug = KeyError("a bug stays a bug")
    with pytest.raises(KeyError) as caught, map_exceptions(TO_REVIEW_ERROR):
        _raise(bug)
    assert caught.value is bug
    with map_exceptions(TO_STORE_UNAVAILABLE):
        pass  # nothing raised, nothing happens


def test_the_first_matching_entry_decides() -> None:
    # ChannelNotFoundEntity is an AMQPError: the review boundary says not_found for it,
    # and keeps RabbitMQ's own error out of the chain (its message says it all).
    with pytest.raises(ReviewError) as caught, amqp_errors():
        _raise(ChannelNotFoundEntity("NOT_FOUND - no queue 'trust.blocked'"))
    assert caught.value.code == "not_found"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(ReviewError) as caught, amqp_errors():
        _raise(AMQPError("connection reset"))
    assert caught.value.code == "amqp_unavailable"
    assert isinstance(caught.value.__cause__, AMQPError)


async def test_the_boundary_is_reusable_and_works_around_awaits() -> None:
    boundary = map_exceptions(TO_STORE_UNAVAILABLE)

    async def failing() -> None:
        raise RedisConnectionError("down")

    for _ in range(3):
        with pytest.raises(StoreUnavailable), boundary:
            await failing()


@pytest.mark.parametrize(
    "error", [CommitFailed("x"), NoNodeAvailable("x"), ConnectionLost("x"), HeldBack(),
              ServersError("x")],
)  # fmt: skip
def test_the_brokers_own_errors_are_in_its_tree(error: Exception) -> None:
    assert isinstance(error, TrustBrokerError)


@pytest.mark.parametrize("error", [CommitFailed("x"), NoNodeAvailable("x"), ConnectionLost("x")])
def test_lost_connections_stay_connection_errors_and_mean_unavailable(error: Exception) -> None:
    # Callers that retry on a lost connection (ConnectionError) keep doing so, and a
    # producer treats them as "no confirm: it may or may not have arrived".
    assert isinstance(error, ConnectionError) and isinstance(error, BrokerUnavailable)
    assert isinstance(error, CONNECT_ERRORS)


def test_the_named_tuples_nest() -> None:
    assert set(CONNECT_ERRORS) <= set(CHANNEL_ERRORS)
    assert issubclass(ChannelInvalidStateError, RuntimeError)
    for kind in CHANNEL_ERRORS:
        assert issubclass(kind, AMQP_ERRORS)
    assert not issubclass(KeyError, AMQP_ERRORS) and not issubclass(TypeError, AMQP_ERRORS)
