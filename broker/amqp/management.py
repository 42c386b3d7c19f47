"""A minimal client for the RabbitMQ management HTTP API (standard library only; callers
run it in a thread): provisioning creates users and permissions with it, the router's
metrics read queue depths."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson

from broker.config import mask_url, split_urls
from broker.errors import ConfigError

# A proxy in the environment must never see the admin's credentials or loopback calls.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _node(url: str) -> tuple[str, str]:
    """(base URL, Authorization header) of one management node URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"management URL must be http(s)://user:pass@host:port/: {url!r}")
    if not parts.username:
        raise ConfigError(
            f"management URL {mask_url(url)} has no credentials: the servers create no "
            "guest; use the admin login from the run directory's credentials.json"
        )
    login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    auth = "Basic " + base64.b64encode(login.encode()).decode()
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}", auth


class ManagementAPI:
    """A minimal client for the RabbitMQ management HTTP API, over one or more nodes."""

    def __init__(self, url: str) -> None:
        self._nodes = [_node(one) for one in split_urls(url)]
        self._display = mask_url(url)
        self._turn = 0

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request to the first node that answers (failing over to the next);
        raise ConfigError with the server's answer on a refusal or when none answers."""
        data = None if body is None else orjson.dumps(body)
        failures: list[str] = []
        for _ in range(len(self._nodes)):
            base, auth = self._nodes[self._turn % len(self._nodes)]
            req = urllib.request.Request(base + path, data=data, method=method)
            req.add_header("Authorization", auth)
            req.add_header("Content-Type", "application/json")
            try:
                with _NO_PROXY.open(req, timeout=10) as response:
                    payload = response.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:200]
                raise ConfigError(
                    f"{method} {path} refused by RabbitMQ ({exc.code}): {detail}"
                ) from None
            except (urllib.error.URLError, OSError) as exc:
                failures.append(f"{base}: {exc}")
                self._turn += 1
                continue
            return orjson.loads(payload) if payload else None
        raise ConfigError(
            f"cannot reach the RabbitMQ management API at {self._display}: "
            f"{'; '.join(failures)}; is the server running (`trust-broker servers start`)?"
        )

    def put_vhost(self, vhost: str) -> None:
        """Create a virtual host (idempotent)."""
        self.request("PUT", f"/api/vhosts/{quote(vhost, safe='')}", {})

    def delete_vhost(self, vhost: str) -> None:
        """Delete a virtual host and everything in it."""
        self.request("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")

    def put_user(self, username: str, password: str, tags: str = "") -> None:
        """Create or update a user."""
        path = f"/api/users/{quote(username, safe='')}"
        self.request("PUT", path, {"password": password, "tags": tags})

    def set_permissions(self, vhost: str, username: str, perms: dict[str, str]) -> None:
        """Set a user's configure/write/read regexes on a vhost."""
        path = f"/api/permissions/{quote(vhost, safe='')}/{quote(username, safe='')}"
        self.request("PUT", path, perms)

    def delete_user(self, username: str) -> None:
        """Delete a user."""
        self.request("DELETE", f"/api/users/{quote(username, safe='')}")

    def put_policy(self, vhost: str, name: str, pattern: str, definition: dict[str, Any]) -> None:
        """Create or replace a policy on a vhost (applies to queues matching `pattern`)."""
        path = f"/api/policies/{quote(vhost, safe='')}/{quote(name, safe='')}"
        self.request(
            "PUT", path, {"pattern": pattern, "definition": definition, "apply-to": "queues"}
        )
