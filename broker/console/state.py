"""What every console request shares, and the two ways it answers (HTML or JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from broker.config import BrokerConfig
from broker.console.auth import Sessions, Users
from broker.core.identity import AgentKey
from broker.store.redis import RedisStore

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "tb_session"
LOGIN_COOKIE = "tb_login"


@dataclass(frozen=True)
class Console:
    """The console's configuration, users, sessions, store and templates."""

    config: BrokerConfig
    users: Users
    sessions: Sessions
    store: RedisStore
    templates: Jinja2Templates
    secure_cookies: bool = False
    # Signs evidence requests to senders; without it that button is not offered.
    broker_key: AgentKey | None = None


def templates() -> Jinja2Templates:
    """Jinja2 with autoescaping on for every template, whatever its file name."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return Jinja2Templates(env=env)


def console_of(request: Request) -> Console:
    """The Console the app was created with."""
    return cast(Console, request.app.state.console)


def wants_json(request: Request) -> bool:
    """True for the admin API, which answers in JSON."""
    return request.url.path.startswith("/api/")


class JSON(Response):
    """A JSON response encoded by orjson (dataclasses included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
