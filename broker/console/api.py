"""The admin API: the console's data and actions as JSON, for scripts and console.js.

Scripts send `Authorization: Bearer TOKEN`; the browser's own calls use its session cookie
and send the CSRF token in `X-CSRF-Token`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from broker.clock import wall_clock_ms
from broker.console import actions, params, queries
from broker.console.access import Caller, guarded
from broker.console.auth import Permission
from broker.console.state import JSON, console_of
from broker.core.canonical import loads_strict
from broker.errors import ConfigError, EnvelopeError

VIEW, REVIEW, POLICY = Permission.VIEW, Permission.REVIEW, Permission.POLICY


@guarded(VIEW)
async def whoami(request: Request, caller: Caller) -> Response:
    """The caller's name and role."""
    return JSON({"name": caller.user.name, "role": caller.user.role.value})


@guarded(VIEW)
async def decisions(request: Request, caller: Caller) -> Response:
    """Newest decisions first; `after` (Unix ms) for only the recent ones."""
    query = request.query_params
    data = await queries.feed(
        console_of(request),
        after=params.optional_integer(query.get("after")),
        limit=params.limit(query, 100),
    )
    return JSON(data)


@guarded(VIEW)
async def blocked(request: Request, caller: Caller) -> Response:
    """Blocked records, newest first, with sender, recipient and reason filters."""
    query = request.query_params
    wanted = params.blocked_filter(query, wall_clock_ms())
    return JSON(await queries.blocked(console_of(request), wanted, limit=params.limit(query, 50)))


@guarded(VIEW)
async def escalations(request: Request, caller: Caller) -> Response:
    """Pending escalations."""
    return JSON(await queries.escalations(console_of(request)))


@guarded(VIEW)
async def peers(request: Request, caller: Caller) -> Response:
    """Known peers with their latest composite, tier and last message; `q` searches DIDs,
    `sort` is composite, tier, last_seen or did."""
    query = request.query_params
    data = await queries.peers(
        console_of(request),
        search=query.get("q", ""),
        sort=query.get("sort") or "composite",
        limit=params.limit(query, 100),
    )
    return JSON(data)


@guarded(VIEW)
async def openapi(request: Request, caller: Caller) -> Response:
    """This API described as OpenAPI 3.1."""
    from broker.console.openapi import SPEC

    return JSON(SPEC)


@guarded(VIEW)
async def peer(request: Request, caller: Caller) -> Response:
    """One peer's dimensions, evidence, pacts and score history."""
    did = params.did(request.path_params["did"])
    return JSON(await queries.peer(console_of(request), did))


@guarded(VIEW)
async def policy(request: Request, caller: Caller) -> Response:
    """The policy in force and its history."""
    return JSON(await queries.policy(console_of(request)))


@guarded(VIEW)
async def what_if(request: Request, caller: Caller) -> Response:
    """Replay recent decisions under `set=PATH=VALUE` (nothing is applied)."""
    query = request.query_params
    proposal = queries.WhatIfRequest.parse(query.get("set", ""), params.limit(query, 1000))
    return JSON(await queries.what_if(console_of(request), proposal))


@guarded(POLICY)
async def apply_policy(request: Request, caller: Caller) -> Response:
    """Body {"path", "value", "why"}: put the change in force as a new version."""
    body = await _json_body(request)
    value = body.get("value")
    raw = value if isinstance(value, str) else orjson.dumps(value).decode()
    applied = await actions.apply_policy(
        console_of(request),
        str(body.get("path") or ""),
        raw,
        caller.user.name,
        str(body.get("why") or ""),
    )
    return JSON(applied)


@guarded(REVIEW)
async def review(request: Request, caller: Caller) -> Response:
    """Body {"why", "penalise"?}: release/confirm a block, approve/reject/rescore/ask."""
    queue, action = request.path_params["queue"], request.path_params["action"]
    if action not in actions.REVIEW_ACTIONS.get(queue, ()):
        return JSON({"error": "no such review action", "status": 404}, status_code=404)
    trace = params.trace(request.path_params["trace"])
    body = await _json_body(request)
    result = await actions.review(
        console_of(request),
        action,
        trace,
        caller.user.name,
        str(body.get("why") or ""),
        penalise=bool(body.get("penalise")),
    )
    return JSON(result)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = loads_strict(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise ConfigError("the request body is not JSON") from None
    except EnvelopeError as exc:
        raise ConfigError(f"the request body is malformed: {exc}") from None
    if not isinstance(body, dict):
        raise ConfigError("the request body is a JSON object")
    return body
