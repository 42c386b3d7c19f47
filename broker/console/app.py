"""The console as a Starlette application: routes, security headers, error translation."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.amqp.errors import AMQPError, ChannelNotFoundEntity
from broker.app import open_store
from broker.config import BrokerConfig
from broker.console import api, pages
from broker.console.access import identify
from broker.console.actions import review_status
from broker.console.auth import Sessions, Users
from broker.console.state import HERE, JSON, Console, templates, wants_json
from broker.core.identity import AgentKey
from broker.errors import BrokerUnavailable, ReviewError, StoreUnavailable, TrustBrokerError

log = logging.getLogger("broker.console")
MAX_BODY_BYTES = 64 * 1024

# Scripts only from this origin's /static (no inline script), no framing, no referrer.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; "
        b"img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def create_app(
    config: BrokerConfig,
    users: Users,
    *,
    sessions: Sessions | None = None,
    secure_cookies: bool = False,
    broker_key: AgentKey | None = None,
) -> Starlette:
    """The console and admin API for `users`, reading and deciding through `config`."""
    console = Console(
        config,
        users,
        sessions or Sessions(),
        open_store(config),
        templates(),
        secure_cookies=secure_cookies,
        broker_key=broker_key,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await console.store.close()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            ReviewError: _review_error,
            TrustBrokerError: _broker_error,
            AMQPError: _unavailable,
            OSError: _unavailable,
        },
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.console = console
    app.add_middleware(SecurityHeaders)
    return app


ROUTES = [
    Route("/login", pages.login_get, methods=["GET"]),
    Route("/login", pages.login_post, methods=["POST"]),
    Route("/logout", pages.logout, methods=["POST"]),
    Route("/", pages.feed_page),
    Route("/blocked", pages.blocked_page),
    Route("/escalations", pages.escalations_page),
    Route("/peers", pages.peers_page),
    Route("/peers/{did}", pages.peer_page),
    Route("/policy", pages.policy_page, methods=["GET"]),
    Route("/policy", pages.policy_form, methods=["POST"]),
    Route("/{queue:str}/{trace:str}/{action:str}", pages.review_form, methods=["POST"]),
    Route("/api/whoami", api.whoami),
    Route("/api/decisions", api.decisions),
    Route("/api/blocked", api.blocked),
    Route("/api/escalations", api.escalations),
    Route("/api/openapi.json", api.openapi),
    Route("/api/peers", api.peers),
    Route("/api/peers/{did}", api.peer),
    Route("/api/policy", api.policy, methods=["GET"]),
    Route("/api/policy", api.apply_policy, methods=["POST"]),
    Route("/api/policy/what-if", api.what_if),
    Route("/api/{queue:str}/{trace:str}/{action:str}", api.review, methods=["POST"]),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _error(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSON({"error": message, "status": status}, status_code=status)
    return pages.render(request, identify(request), "error.html", status, message=message)


async def _review_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ReviewError)
    log.info("console: review refused on %s: %s (%s)", request.url.path, exc.code, exc)
    return _error(request, review_status(exc), str(exc))


async def _broker_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StoreUnavailable | BrokerUnavailable):
        return await _unavailable(request, exc)
    return _error(request, 400, str(exc))


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("console: %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    if isinstance(exc, ChannelNotFoundEntity):
        # The router declares the blocked stream and the escalation queue when it starts.
        return _error(request, 503, "No router has run on this vhost yet: nothing to show.")
    return _error(request, 503, "RabbitMQ or Redis is not answering; try again shortly.")
