"""The console's admin API against its OpenAPI description, the peer list, and what
escalation cards and empty pages tell a reviewer; on the real servers, through a real
router."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from broker.config import BrokerConfig
from broker.console.app import ROUTES, create_app
from broker.console.auth import Role, Users
from broker.console.openapi import SPEC
from broker.core.identity import AgentKey
from broker.ops.escalations import request_evidence
from broker.ops.reading import read_escalations
from broker.router import Router
from broker.store.redis import RedisStore
from tests.integration.conftest import AgentFactory
from tests.integration.test_console import eventually, usd
from tests.integration.trust import make_level

TOKENS = {"vera": "vera-viewer-token-000000000", "sam": "sam-security-token-000000000",
          "olga": "olga-ops-token-000000000"}  # fmt: skip
ROLES = {"vera": Role.VIEWER, "sam": Role.SECURITY, "olga": Role.OPS}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
    "boolean": bool, "null": type(None),
}  # fmt: skip


def check(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Validate `value` against the JSON Schema subset the spec uses ($ref resolved)."""
    if "$ref" in schema:
        check(value, SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], where)
    elif "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                return check(value, option, where)
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: matches no option: {errors}")
    else:
        _check_scalar(value, schema, where)
        if isinstance(value, dict):
            _check_object(value, schema, where)
        if isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                check(item, schema["items"], f"{where}[{index}]")


def _check_scalar(value: Any, schema: dict[str, Any], where: str) -> None:
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        ok = any(isinstance(value, _TYPES[n]) and not (n in ("integer", "number")
                 and isinstance(value, bool)) for n in names)  # fmt: skip
        assert ok, f"{where}: {value!r} is not {names}"
    if "pattern" in schema and isinstance(value, str):
        assert re.search(schema["pattern"], value), f"{where}: {value!r} !~ {schema['pattern']}"


def _check_object(value: dict[str, Any], schema: dict[str, Any], where: str) -> None:
    for name in schema.get("required", []):
        assert name in value, f"{where}: missing {name!r}"
    for name, sub in schema.get("properties", {}).items():
        if name in value:
            check(value[name], sub, f"{where}.{name}")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, item in value.items():
            check(item, extra, f"{where}.{name}")


def answers(operation: dict[str, Any], status: int) -> dict[str, Any]:
    content = operation["responses"][str(status)].get("content", {})
    schema: dict[str, Any] = content.get("application/json", {}).get("schema", {})
    return schema


@pytest.fixture
async def api(config: BrokerConfig, broker_key: AgentKey) -> AsyncIterator[Any]:
    users = Users()
    for name, token in TOKENS.items():
        users = users.with_user(name, ROLES[name], token)
    app = create_app(config, users, broker_key=broker_key)
    transport = httpx.ASGITransport(app=app)

    def client(name: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {TOKENS[name]}"} if name else {}
        return httpx.AsyncClient(transport=transport, base_url="http://console",
                                 headers=headers, timeout=60)  # fmt: skip

    yield client
    await app.state.console.store.close()


async def scene(store: RedisStore, config: BrokerConfig, agents: AgentFactory,
                broker_key: AgentKey) -> dict[str, Any]:  # fmt: skip
    """Several peers through a real router: two newcomers blocked, a verified peer on
    probation, an established payer with an escalation its sender was asked about."""
    recipient = await agents()
    newcomers = [await agents(), await agents()]
    verified, payer = await agents(), await agents()
    await make_level(store, verified.client, AgentKey.generate(), "probation")
    await make_level(store, payer.client, AgentKey.generate(), "established")
    for agent in (*newcomers, verified, payer):
        await agent.send(recipient, {"hello": 1})
    await payer.send(recipient, {"invoice": 9}, **usd("150.00"))
    [pending] = await eventually(lambda: read_escalations(config))
    await request_evidence(config, store, broker_key, pending["trace_id"], "sam", "post a bond")
    await eventually(lambda: store.recent_decisions(limit=10), timeout=10)
    return {"recipient": recipient, "newcomers": newcomers, "verified": verified,
            "payer": payer, "escalation": pending}  # fmt: skip


def _route_paths() -> set[tuple[str, str]]:
    found = set()
    for route in ROUTES:
        path = getattr(route, "path", "")
        if path.startswith("/api/"):
            plain = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", path)
            for method in getattr(route, "methods", None) or ():
                if method != "HEAD":
                    found.add((plain, method.lower()))
    return found


def test_the_openapi_description_lists_exactly_the_api_the_console_serves() -> None:
    described = {(path, method) for path, ops in SPEC["paths"].items() for method in ops}
    assert described == _route_paths()


async def test_every_operation_answers_as_its_description_says(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    broker_key: AgentKey, api: Any,
) -> None:  # fmt: skip
    cast = await scene(store, config, agents, broker_key)
    paths = SPEC["paths"]
    async with api("vera") as vera, api("sam") as sam, api("olga") as olga, api(None) as anon:
        assert (await vera.get("/api/openapi.json")).json() == SPEC
        gets = {
            "/api/whoami": {}, "/api/decisions": {"limit": 50}, "/api/blocked": {"hours": 0},
            "/api/escalations": {}, "/api/peers": {"sort": "tier"}, "/api/policy": {},
            "/api/policy/what-if": {"set": "thresholds.probation=0.55"},
            f"/api/peers/{quote(cast['payer'].did)}": {},
        }  # fmt: skip
        for url, query in gets.items():
            template = "/api/peers/{did}" if url.startswith("/api/peers/did") else url
            reply = await vera.get(url, params=query)
            assert reply.status_code == 200, (url, reply.text)
            check(reply.json(), answers(paths[template]["get"], 200), url)
        refused = await anon.get("/api/blocked")
        check(refused.json(), answers(paths["/api/blocked"]["get"], 401))

        blocked = (await vera.get("/api/blocked", params={"hours": 0})).json()["records"]
        trace = next(r["trace"] for r in blocked if r["reason"] == "insufficient_trust")
        review = paths["/api/{queue}/{trace}/{action}"]["post"]
        done = await sam.post(f"/api/blocked/{trace}/confirm", json={"why": "spam"})
        check(done.json(), answers(review, 200))
        again = await sam.post(f"/api/blocked/{trace}/release", json={"why": "undo"})
        assert again.status_code == 409
        check(again.json(), answers(review, 409))
        nowhere = await sam.post(f"/api/blocked/{trace}/approve", json={"why": "x"})
        assert nowhere.status_code == 404
        check(nowhere.json(), answers(review, 404))

        change = {"path": "caps.established_per_message", "value": 200, "why": "bigger invoices"}
        applied = await olga.post("/api/policy", json=change)
        assert applied.status_code == 200, applied.text
        check(applied.json(), answers(paths["/api/policy"]["post"], 200))
        bad = await olga.post("/api/policy", json={**change, "value": -5})
        assert bad.status_code == 400
        check(bad.json(), answers(paths["/api/policy"]["post"], 400))


async def test_the_peer_list_searches_and_sorts_every_known_peer(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    broker_key: AgentKey, api: Any,
) -> None:  # fmt: skip
    cast = await scene(store, config, agents, broker_key)
    async with api("vera") as vera:
        by_composite = (await vera.get("/api/peers")).json()["peers"]
        senders = [row for row in by_composite if row["messages"]]
        assert [r["composite"] for r in senders] == sorted(
            (r["composite"] for r in senders), reverse=True
        )
        assert senders[0]["did"] == cast["payer"].did and senders[0]["tier"] == "established"
        # The recipient never sent anything: listed (provisioned), after every sender.
        quiet = next(row for row in by_composite if row["did"] == cast["recipient"].did)
        assert quiet["provisioned"] and quiet["composite"] is None
        assert by_composite.index(quiet) > by_composite.index(senders[-1])
        tiers = [r["tier"] for r in (await vera.get("/api/peers?sort=tier")).json()["peers"]]
        order = ["established", "probation", "blocked", None]
        assert tiers == sorted(tiers, key=order.index)
        seen = [r["last_seen"] for r in (await vera.get("/api/peers?sort=last_seen")).json()
                ["peers"] if r["last_seen"]]  # fmt: skip
        assert seen == sorted(seen, reverse=True)
        part = cast["newcomers"][0].did[-10:]
        found = (await vera.get("/api/peers", params={"q": part})).json()
        assert [row["did"] for row in found["peers"]] == [cast["newcomers"][0].did]

        page = await vera.get("/peers", params={"sort": "tier"})
        assert page.status_code == 200 and cast["verified"].did in page.text
        assert page.text.count('<tr data-did="') == len(by_composite)
        empty = await vera.get("/peers", params={"q": ""})  # was a raw 400
        assert empty.status_code == 200 and "peer(s)" in empty.text
        none = await vera.get("/peers", params={"q": "zzzz-nobody"})
        assert none.status_code == 200 and "No peer's DID contains" in none.text
        typo = await vera.get("/peers", params={"did": "did:key:zNotAKey"})
        assert typo.status_code == 200 and "not a whole did:key" in typo.text
        whole = await vera.get("/peers", params={"q": cast["payer"].did})
        assert whole.status_code == 303 and whole.headers["location"].startswith("/peers/did")
        bad = await vera.get("/peers/not-a-did")
        assert bad.status_code == 400 and "That request could not be used" in bad.text


async def test_escalation_cards_show_the_remediation_and_the_evidence_request(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    broker_key: AgentKey, api: Any,
) -> None:  # fmt: skip
    cast = await scene(store, config, agents, broker_key)
    async with api("sam") as sam:
        page = (await sam.get("/escalations")).text
        card = page[page.index(f'data-trace="{cast["escalation"]["trace_id"]}"') :]
        assert cast["escalation"]["decision"]["remediation"] in card
        assert "requested from the sender" in card and "post a bond" in card and "by sam" in card
        assert "Ask sender for evidence" not in card  # asked already
        [row] = (await sam.get("/api/escalations")).json()["escalations"]
        assert row["evidence_requested"]["why"] == "post a bond"
        await sam.post(f"/api/escalations/{row['trace']}/reject", json={"why": "no"})
        empty = (await sam.get("/escalations")).text
        assert "No escalations are waiting" in empty and "approves or rejects" in empty
