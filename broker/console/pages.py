"""The console's HTML pages and forms, rendered on the server (Jinja2, autoescaped)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.clock import wall_clock_ms
from broker.console import actions, params, queries
from broker.console.access import (
    Caller,
    guarded,
    identify,
    login_nonce_ok,
    login_page,
    refuse,
    safe_next,
)
from broker.console.auth import Permission, allowed
from broker.console.state import SESSION_COOKIE, console_of
from broker.core.recorder import TRACE_ID
from broker.errors import ConfigError, IdentityError, PolicyError
from broker.ops.rules import UNRELEASABLE

log = logging.getLogger("broker.console.pages")
VIEW, REVIEW, POLICY = Permission.VIEW, Permission.REVIEW, Permission.POLICY


def render(
    request: Request, caller: Caller | None, name: str, status: int = 200, **context: Any
) -> Response:
    """A page with the signed-in user, their CSRF token and what their role may do."""
    role = caller.user.role if caller else None
    base = {
        "user": caller.user if caller else None,
        "csrf": caller.csrf if caller else "",
        "can_review": role is not None and allowed(role, REVIEW),
        "can_policy": role is not None and allowed(role, POLICY),
        "page": name.removesuffix(".html"),
        "done": _done(request),
        "status": status,
    }
    templates = console_of(request).templates
    return templates.TemplateResponse(request, name, base | context, status_code=status)


def _done(request: Request) -> str:
    """The note after a successful form post, rebuilt from known words only."""
    done, trace = request.query_params.get("done", ""), request.query_params.get("trace", "")
    known = {*actions.REVIEW_ACTIONS["blocked"], *actions.REVIEW_ACTIONS["escalations"]}
    if done in known and TRACE_ID.fullmatch(trace):
        return f"{done}: done for trace {trace}"
    version = request.query_params.get("version", "")
    if done == "policy" and version.isdigit():
        return f"policy version {version} is in force"
    return ""


# -- pages ----------------------------------------------------------------------------------


@guarded(VIEW)
async def feed_page(request: Request, caller: Caller) -> Response:
    """Live decision feed: the newest decisions; console.js polls for more."""
    data = await queries.feed(
        console_of(request), after=None, limit=params.limit(request.query_params, 50)
    )
    newest = max((row["t"] or 0 for row in data["decisions"]), default=0)
    return render(request, caller, "feed.html", rows=data["decisions"], newest=newest)


@guarded(VIEW)
async def blocked_page(request: Request, caller: Caller) -> Response:
    """The blocked stream, newest first, filtered by sender, recipient and reason."""
    wanted = params.blocked_filter(request.query_params, wall_clock_ms())
    limit = params.limit(request.query_params, 50)
    data = await queries.blocked(console_of(request), wanted, limit=limit)
    hours = params.integer(request.query_params.get("hours"), params.DEFAULT_HOURS)
    return render(
        request,
        caller,
        "blocked.html",
        limit=limit,
        hours=hours,
        unreleasable=sorted(UNRELEASABLE),
        **data,
    )


@guarded(VIEW)
async def escalations_page(request: Request, caller: Caller) -> Response:
    """Escalations waiting for a human, with approve and reject for security."""
    data = await queries.escalations(console_of(request))
    can_ask = console_of(request).broker_key is not None
    return render(request, caller, "escalations.html", can_ask=can_ask, **data)


@guarded(VIEW)
async def peer_page(request: Request, caller: Caller) -> Response:
    """One peer: dimensions now, score history, evidence and pacts."""
    did = params.did(request.path_params["did"])
    data = await queries.peer(console_of(request), did)
    return render(request, caller, "peer.html", did=did, **data)


@guarded(VIEW)
async def peers_page(request: Request, caller: Caller) -> Response:
    """Every known peer, searchable by DID and sortable; a whole DID goes to its page."""
    query = request.query_params
    search = (query.get("q") or query.get("did") or "").strip()
    note = ""
    if search.startswith("did:"):
        try:
            return RedirectResponse("/peers/" + quote(params.did(search), safe=""), 303)
        except (ConfigError, IdentityError) as exc:
            note = f"{search[:80]} is not a whole did:key ({exc}); showing peers that contain it"
    sort = query.get("sort") or "composite"
    data = await queries.peers(
        console_of(request), search=search, sort=sort, limit=params.limit(query, 100)
    )
    return render(request, caller, "peers.html", note=note, **data)


@guarded(VIEW)
async def policy_page(request: Request, caller: Caller) -> Response:
    """The policy in force, its history, and a what-if preview of one change."""
    console = console_of(request)
    data = await queries.policy(console)
    proposal = request.query_params.get("set", "").strip()
    last = params.limit(request.query_params, params.MAX_LIMIT)
    result, error = None, ""
    if proposal:
        try:
            result = await queries.what_if(console, queries.WhatIfRequest.parse(proposal, last))
        except PolicyError as exc:
            error = str(exc)
    return render(
        request,
        caller,
        "policy.html",
        status=400 if error else 200,
        proposal=proposal,
        last=last,
        what_if=result,
        error=error,
        **data,
    )


# -- forms ----------------------------------------------------------------------------------


@guarded(REVIEW)
async def review_form(request: Request, caller: Caller) -> Response:
    """Release, confirm, approve, reject, re-score or ask for evidence, then go back."""
    queue, action = request.path_params["queue"], request.path_params["action"]
    if action not in actions.REVIEW_ACTIONS.get(queue, ()):
        return render(request, caller, "error.html", 404, message="No such review action.")
    trace = params.trace(request.path_params["trace"])
    form = await request.form()
    why, penalise = params.text(form, "why"), params.text(form, "penalise") == "on"
    await actions.review(
        console_of(request), action, trace, caller.user.name, why, penalise=penalise
    )
    return RedirectResponse(f"/{queue}?" + urlencode({"done": action, "trace": trace}), 303)


@guarded(POLICY)
async def policy_form(request: Request, caller: Caller) -> Response:
    """Put one changed value in force (ops only)."""
    form = await request.form()
    applied = await actions.apply_policy(
        console_of(request),
        params.text(form, "path", 200),
        params.text(form, "value"),
        caller.user.name,
        params.text(form, "why"),
    )
    return RedirectResponse(f"/policy?done=policy&version={applied['version']}", 303)


# -- signing in and out ---------------------------------------------------------------------


async def login_get(request: Request) -> Response:
    """The sign-in form (or the feed, when already signed in)."""
    if identify(request) is not None:
        return RedirectResponse("/", status_code=303)
    next_path = request.query_params.get("next", "/")
    return login_page(request, status=200, error="", next_path=next_path)


async def login_post(request: Request) -> Response:
    """Check the token; on success start a server-side session in an HttpOnly cookie."""
    console = console_of(request)
    form = await request.form()
    next_path = safe_next(params.text(form, "next", 500) or "/")
    if not login_nonce_ok(request, params.text(form, "nonce", 100)):
        return refuse(request, 403, "sign-in form expired or forged (login CSRF)", None)
    user = console.users.verify(params.text(form, "token", 200))
    if user is None:
        log.warning("console refused 401 POST /login: unknown token (user=- role=-)")
        return login_page(
            request, status=401, error="That token is not valid.", next_path=next_path
        )
    session_id, _ = console.sessions.create(user)
    log.info("console: %s (%s) signed in", user.name, user.role.value)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=console.secure_cookies,
        path="/",
    )
    response.delete_cookie("tb_login", path="/login")
    return response


@guarded(VIEW)
async def logout(request: Request, caller: Caller) -> Response:
    """End the session."""
    console_of(request).sessions.drop(request.cookies.get(SESSION_COOKIE, ""))
    log.info("console: %s signed out", caller.user.name)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
