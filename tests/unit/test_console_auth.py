"""Console credentials, roles, sessions and CSRF (pure), and refusals before any I/O."""

from __future__ import annotations

import hashlib
import hmac
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config import BrokerConfig
from broker.console.access import safe_next
from broker.console.app import create_app
from broker.console.auth import (
    Permission,
    Role,
    Session,
    Sessions,
    User,
    Users,
    allowed,
    csrf_ok,
    hash_token,
    load_users,
    new_token,
    parse_users,
    save_users,
)
from broker.errors import ConfigError

TOKENS = {"vera": "viewer-token", "sam": "security-token", "olga": "ops-token"}
ROLES = {"vera": Role.VIEWER, "sam": Role.SECURITY, "olga": Role.OPS}


def make_users() -> Users:
    users = Users()
    for name, token in TOKENS.items():
        users = users.with_user(name, ROLES[name], token)
    return users


def test_a_token_is_stored_only_as_its_sha256() -> None:
    token = new_token()
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    stored = Users().with_user("alice", Role.SECURITY, token).to_json()
    assert token.encode() not in stored and hash_token(token).encode() in stored


def test_verify_finds_the_user_and_refuses_anything_else() -> None:
    users = make_users()
    for name, token in TOKENS.items():
        found = users.verify(token)
        assert found is not None and (found.name, found.role) == (name, ROLES[name])
    for wrong in ("", "viewer-token ", "VIEWER-TOKEN", "x" * 5000, "é"):
        assert users.verify(wrong) is None
    assert Users().verify("anything") is None


def test_verify_compares_every_hash_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("broker.console.auth.hmac.compare_digest", spy)
    users = make_users()
    users.verify(TOKENS["vera"])  # the first user matches: the others are still compared
    assert len(compared) == 3
    compared.clear()
    Users().verify("no users at all")  # an empty file still costs one comparison
    assert len(compared) == 1


@pytest.mark.parametrize(
    ("role", "view", "review", "policy"),
    [
        (Role.VIEWER, True, False, False),
        (Role.SECURITY, True, True, False),
        (Role.OPS, True, False, True),
    ],
)
def test_roles_grant_what_the_table_says(
    role: Role, view: bool, review: bool, policy: bool
) -> None:
    assert allowed(role, Permission.VIEW) is view
    assert allowed(role, Permission.REVIEW) is review
    assert allowed(role, Permission.POLICY) is policy


def test_csrf_token_must_match_the_session() -> None:
    sessions = Sessions()
    _, mine = sessions.create(User("sam", Role.SECURITY, "0" * 64))
    _, theirs = sessions.create(User("olga", Role.OPS, "0" * 64))
    assert csrf_ok(mine, mine.csrf)
    for wrong in (None, "", theirs.csrf, mine.csrf + "x", mine.csrf[:-1], "é"):
        assert not csrf_ok(mine, wrong)


def test_sessions_expire_and_can_be_dropped() -> None:
    now = [1000.0]
    sessions = Sessions(ttl_s=60, clock=lambda: now[0])
    session_id, session = sessions.create(User("vera", Role.VIEWER, "0" * 64))
    assert isinstance(session, Session) and sessions.get(session_id) is session
    assert sessions.get(session_id + "x") is None
    now[0] += 59
    assert sessions.get(session_id) is session
    now[0] += 1
    assert sessions.get(session_id) is None
    other, _ = sessions.create(User("vera", Role.VIEWER, "0" * 64))
    sessions.drop(other)
    assert sessions.get(other) is None


def test_users_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    assert load_users(path) == Users()
    save_users(path, make_users())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_users(path) == make_users()
    assert all(token not in path.read_text() for token in TOKENS.values())


@pytest.mark.parametrize(
    "content",
    [
        b"[]",
        b'{"users": [{"name": "a", "role": "admin", "token_sha256": "' + b"0" * 64 + b'"}]}',
        b'{"users": [{"name": "a", "role": "ops", "token_sha256": "short"}]}',
        b'{"users": [{"name": "a b", "role": "ops", "token_sha256": "' + b"0" * 64 + b'"}]}',
        b'{"users": [{"role": "ops"}]}',
        b"not json",
    ],
)
def test_a_malformed_users_file_is_refused(content: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_users(content)


@pytest.mark.parametrize(
    ("asked", "goes_to"),
    [
        ("/blocked?reason=replay", "/blocked?reason=replay"),
        ("/", "/"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
    ],
)
def test_after_sign_in_only_local_paths(asked: str, goes_to: str) -> None:
    assert safe_next(asked) == goes_to


# -- refusals happen before any store or broker call, so no server is needed here ----------


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # In process, without the lifespan: nothing here may reach Redis or RabbitMQ.
    app = create_app(BrokerConfig(redis_url="redis://127.0.0.1:1/0"), make_users())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/decisions", {}, 401),
        ("GET", "/api/decisions", {"Authorization": "Bearer wrong"}, 401),
        ("GET", "/api/decisions", {"Authorization": "Basic dmVyYTp4"}, 401),
        ("POST", "/api/escalations/" + "a" * 32 + "/approve", bearer("vera"), 403),
        ("POST", "/api/escalations/" + "a" * 32 + "/approve", bearer("olga"), 403),
        ("POST", "/api/blocked/" + "a" * 32 + "/release", bearer("olga"), 403),
        ("POST", "/api/policy", bearer("sam"), 403),
        ("POST", "/api/policy", bearer("vera"), 403),
    ],
)
async def test_api_refuses_missing_credentials_and_wrong_roles(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    with caplog.at_level(logging.WARNING, logger="broker.console.access"):
        reply = await client.request(method, path, headers=headers, json={"why": "x"})
    assert reply.status_code == status
    assert reply.json()["status"] == status
    [record] = [r for r in caplog.records if "console refused" in r.getMessage()]
    logged = record.getMessage()
    assert str(status) in logged and path in logged
    if status == 403:
        name = next(n for n, t in TOKENS.items() if t in headers["Authorization"])
        assert f"user={name}" in logged and f"role={ROLES[name].value}" in logged
    for token in TOKENS.values():
        assert token not in logged and hash_token(token) not in logged


async def test_pages_without_a_session_show_the_sign_in_form(client: httpx.AsyncClient) -> None:
    reply = await client.get("/blocked")
    assert reply.status_code == 401
    assert 'action="/login"' in reply.text and 'name="next" value="/blocked"' in reply.text
    assert reply.headers["content-security-policy"].startswith("default-src 'none'")


async def sign_in(client: httpx.AsyncClient, name: str) -> None:
    """Sign in through the form, as a browser does."""
    form = await client.get("/login")
    nonce = form.text.split('name="nonce" value="')[1].split('"')[0]
    reply = await client.post("/login", data={"token": TOKENS[name], "nonce": nonce, "next": "/x"})
    assert reply.status_code == 303 and reply.headers["location"] == "/x"
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKENS[name] not in cookie


async def test_sign_in_needs_the_form_nonce_and_a_valid_token(client: httpx.AsyncClient) -> None:
    await client.get("/login")
    nonce = client.cookies.get("tb_login") or ""
    forged = await client.post("/login", data={"token": TOKENS["sam"], "nonce": "forged"})
    assert forged.status_code == 403
    wrong = await client.post("/login", data={"token": "nope", "nonce": nonce})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert "nope" not in wrong.text


async def test_a_session_post_without_its_csrf_token_is_refused(client: httpx.AsyncClient) -> None:
    await sign_in(client, "sam")
    trace = "b" * 32
    reply = await client.post(f"/escalations/{trace}/approve", data={"why": "ok"})
    assert reply.status_code == 403
    reply = await client.post(f"/escalations/{trace}/approve", data={"why": "ok", "csrf": "guess"})
    assert reply.status_code == 403
    reply = await client.post("/logout", data={})
    assert reply.status_code == 403  # signing out is a POST too


async def test_a_viewer_session_may_not_change_policy(client: httpx.AsyncClient) -> None:
    await sign_in(client, "vera")
    reply = await client.post("/policy", data={"path": "thresholds.probation", "value": "0.55"})
    assert reply.status_code == 403
    assert "may not" in reply.text


async def test_add_user_prints_the_token_once_and_keeps_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from broker.cli.console import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    path = tmp_path / "users.json"
    for role in ("viewer", "security"):  # the second run replaces role and token
        args = parser.parse_args(
            ["console", "add-user", "sam", "--role", role, "--users", str(path)]
        )
        assert await args.handler(args, BrokerConfig()) == 0
    out = capsys.readouterr()
    first, second = out.out.split()
    assert first != second and first not in out.err and "replaced" in out.err
    users = load_users(path)
    assert [(u.name, u.role) for u in users.users] == [("sam", Role.SECURITY)]
    assert users.verify(second) is not None and users.verify(first) is None
    assert first not in path.read_text() and second not in path.read_text()
