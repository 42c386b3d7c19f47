"""The web console and admin API: server-rendered pages for ops and security.

`create_app` builds the Starlette application; `broker.console.cli` serves it.
"""

from broker.console.app import create_app
from broker.console.auth import Role, Users, load_users

__all__ = ["Role", "Users", "create_app", "load_users"]
