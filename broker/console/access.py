"""Who is calling, and whether they may: sessions, bearer tokens, roles, CSRF, refusals.

Every refusal is logged with the path, the user name and role when known, and the reason;
never with a token, a cookie or a hash.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from broker.console.auth import Permission, Session, User, allowed, csrf_ok
from broker.console.state import (
    JSON,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    console_of,
    wants_json,
)

log = logging.getLogger("broker.console.access")
LOGIN_TTL_S = 600


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a browser session, or a bearer token (session None)."""

    user: User
    session: Session | None

    @property
    def csrf(self) -> str:
        """The CSRF token forms must carry ('' for bearer callers, who need none)."""
        return self.session.csrf if self.session else ""


Endpoint = Callable[[Request, Caller], Awaitable[Response]]
Handler = Callable[[Request], Awaitable[Response]]


def identify(request: Request) -> Caller | None:
    """The caller behind a bearer token or a session cookie, or None.

    A request that presents a bearer token is judged by it alone: a wrong token is not
    rescued by a cookie."""
    console = console_of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        user = console.users.verify(token.strip())
        return None if user is None else Caller(user, None)
    session_id = request.cookies.get(SESSION_COOKIE)
    session = console.sessions.get(session_id) if session_id else None
    return None if session is None else Caller(session.user, session)


def guarded(permission: Permission) -> Callable[[Endpoint], Handler]:
    """Wrap an endpoint: 401 without valid credentials, 403 without `permission` or, for a
    session's POST, without its CSRF token."""

    def wrap(endpoint: Endpoint) -> Handler:
        async def run(request: Request) -> Response:
            caller = identify(request)
            if caller is None:
                return refuse(request, 401, "no valid credentials", None)
            if not allowed(caller.user.role, permission):
                return refuse(request, 403, f"needs the {permission} permission", caller.user)
            if caller.session is not None and not await _csrf_passes(request, caller.session):
                return refuse(request, 403, "missing or wrong CSRF token", caller.user)
            return await endpoint(request, caller)

        run.__name__ = endpoint.__name__
        run.__doc__ = endpoint.__doc__
        return run

    return wrap


async def _csrf_passes(request: Request, session: Session) -> bool:
    """Safe methods need no token; a session's POST must carry its own."""
    if request.method in ("GET", "HEAD"):
        return True
    return csrf_ok(session, await _presented_csrf(request))


async def _presented_csrf(request: Request) -> str | None:
    header = request.headers.get("x-csrf-token")
    if header is not None:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get("csrf")
        return value if isinstance(value, str) else None
    return None


def refuse(request: Request, status: int, why: str, user: User | None) -> Response:
    """Log a refusal and answer 401 (sign in) or 403 (not allowed)."""
    name, role = (user.name, user.role.value) if user else ("-", "-")
    log.warning(
        "console refused %s %s %s: %s (user=%s role=%s)",
        status,
        request.method,
        request.url.path,
        why,
        name,
        role,
    )
    if wants_json(request):
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSON({"error": why, "status": status}, status_code=status, headers=headers)
    if status == 401:
        return login_page(request, status=401, error="Please sign in.", next_path=_next(request))
    context = {"status": status, "message": "Your role may not do this.", "user": user}
    return console_of(request).templates.TemplateResponse(
        request, "error.html", context, status_code=status
    )


def _next(request: Request) -> str:
    return request.url.path if request.method == "GET" else "/"


def login_page(request: Request, *, status: int, error: str, next_path: str) -> Response:
    """The sign-in form, with a fresh nonce bound to a short-lived cookie (login CSRF)."""
    console = console_of(request)
    nonce = secrets.token_urlsafe(24)
    context: dict[str, Any] = {
        "error": error,
        "next": safe_next(next_path),
        "nonce": nonce,
        "user": None,
    }
    response = console.templates.TemplateResponse(
        request, "login.html", context, status_code=status
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_TTL_S,
        httponly=True,
        samesite="strict",
        secure=console.secure_cookies,
        path="/login",
    )
    return response


def login_nonce_ok(request: Request, presented: str) -> bool:
    """True when the sign-in form's nonce matches its cookie."""
    expected = request.cookies.get(LOGIN_COOKIE, "")
    return bool(expected) and hmac.compare_digest(
        expected.encode("utf-8", "replace"), presented.encode("utf-8", "replace")
    )


def safe_next(path: str) -> str:
    """Where to go after signing in: a local path only, never another site."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"
