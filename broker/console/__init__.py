"""The web console and admin API: server-rendered pages for ops and security.

`create_app` builds the Starlette application; `broker.cli.console` serves it. Imported
lazily, so that the command line does not load the web stack for every command.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Role", "Users", "create_app", "load_users"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from broker.console.app import create_app

        return create_app
    if name in ("Role", "Users", "load_users"):
        from broker.console import auth

        return getattr(auth, name)
    raise AttributeError(name)
