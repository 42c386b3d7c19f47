"""The web console on the real servers: every page, the admin API, refusals, and an end to
end run in headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Set TRUST_CONSOLE_SCREENSHOTS=docs to refresh the README's screenshots (from a run with a
few hundred decisions and a dozen peers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn

from broker.config import BrokerConfig
from broker.console.app import create_app
from broker.console.auth import Role, Users, hash_token
from broker.core.envelope import PaymentIntent
from broker.core.identity import AgentKey
from broker.core.records import Record
from broker.ops.escalations import request_evidence
from broker.ops.reading import read_escalations
from broker.router import Router
from broker.store.redis import RedisStore
from tests.integration.conftest import Agent, AgentFactory
from tests.integration.trust import make_level

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # This machine has no network beyond loopback: nothing may try to phone home.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOKENS = {"vera": "vera-viewer-token-0123456789", "sam": "sam-security-token-0123456789",
          "olga": "olga-ops-token-0123456789"}  # fmt: skip
ROLES = {"vera": Role.VIEWER, "sam": Role.SECURITY, "olga": Role.OPS}
SECRETS = [*TOKENS.values(), *(hash_token(t) for t in TOKENS.values())]


@dataclass
class Console:
    """A console served by uvicorn in this test's event loop."""

    url: str
    server: uvicorn.Server

    @contextlib.asynccontextmanager
    async def client(self, name: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
        """An HTTP client, signed in through the form as `name` (or not signed in)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            if name is not None:
                form = await client.get("/login")
                nonce = field(form.text, "nonce")
                reply = await client.post("/login", data={"token": TOKENS[name], "nonce": nonce})
                assert reply.status_code == 303, reply.text
            yield client


def field(html: str, name: str) -> str:
    """The value of the first hidden input called `name` in a page."""
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} field in the page"
    return found[1]


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def console(config: BrokerConfig, broker_key: AgentKey) -> AsyncIterator[Console]:
    users = Users()
    for name, token in TOKENS.items():
        users = users.with_user(name, ROLES[name], token)
    app = create_app(config, users, broker_key=broker_key)
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, ws="none", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "the console did not start"
        await asyncio.sleep(0.02)
    host, port = sock.getsockname()
    yield Console(f"http://{host}:{port}", server)
    server.should_exit = True
    await task
    sock.close()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


def usd(amount: str) -> dict[str, Any]:
    return {"kind": "payment", "payment": PaymentIntent(currency="USD", amount=amount)}


@dataclass
class Scene:
    """A blocked newcomer, an escalated payment and a delivery, all through the router."""

    newcomer: Agent
    payer: Agent
    recipient: Agent
    payment_id: str


async def set_scene(store: RedisStore, config: BrokerConfig, agents: AgentFactory) -> Scene:
    newcomer, payer, recipient = await agents(), await agents(), await agents()
    await make_level(store, payer.client, AgentKey.generate(), "established")
    await newcomer.send(recipient, {"hello": "<script>alert(1)</script>"})
    await payer.send(recipient, {"invoice": 1})
    payment = await payer.send(recipient, {"invoice": 2}, **usd("150.00"))
    assert len(await recipient.receive_all()) == 1
    assert await eventually(lambda: read_escalations(config))
    return Scene(newcomer, payer, recipient, payment.id)


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# -- every page, over HTTP against the live server ------------------------------------------


async def test_every_page_renders_for_a_viewer(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    console: Console,
) -> None:  # fmt: skip
    scene = await set_scene(store, config, agents)
    newcomer, payer = scene.newcomer.did, scene.payer.did
    async with console.client("vera") as vera:
        pages = {
            "/": [newcomer, payer, "insufficient_trust", "payment_cap_exceeded"],
            "/blocked": [newcomer, 'data-dimension="identity"', "identity verification"],
            f"/blocked?reason=insufficient_trust&sender={quote(newcomer)}": ["1 record(s)"],
            "/blocked?reason=bad_signature": ["0 record(s)", "No blocked messages match"],
            "/escalations": [payer, "150.00 USD", 'data-dimension="stake"'],
            f"/peers/{quote(payer)}": ["established", "<polyline", "Test Org", "No active pacts"],
            "/policy": ["version 1", '"probation": 0.5'],
            "/policy?set=caps.established_per_message=200": ["newly delivered", "1 newly"],
        }
        for path, expected in pages.items():
            reply = await vera.get(path)
            assert reply.status_code == 200, (path, reply.text[:500])
            for text in expected:
                assert text in reply.text, (path, text)
            assert "<script>alert" not in reply.text  # escaped, never markup
            assert "Approve and deliver" not in reply.text and "Release to" not in reply.text
            assert "Apply: put in force" not in reply.text
            assert_no_secrets(reply.text)
            assert (vera.cookies.get("tb_session") or "") not in reply.text


async def test_the_admin_api_answers_with_a_bearer_token(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    console: Console,
) -> None:  # fmt: skip
    scene = await set_scene(store, config, agents)
    auth = {"Authorization": f"Bearer {TOKENS['vera']}"}
    async with httpx.AsyncClient(base_url=console.url, headers=auth) as api:
        assert (await api.get("/api/whoami")).json() == {"name": "vera", "role": "viewer"}
        feed = (await api.get("/api/decisions")).json()["decisions"]
        assert {row["action"] for row in feed} == {"block", "deliver", "escalate"}
        newest = max(row["t"] for row in feed)
        later = (await api.get("/api/decisions", params={"after": newest + 60_000})).json()
        assert later["decisions"] == []
        [pending] = (await api.get("/api/escalations")).json()["escalations"]
        assert (pending["message_id"], pending["payment"]) == (scene.payment_id, "150.00 USD")
        blocked = (await api.get("/api/blocked", params={"sender": scene.newcomer.did})).json()
        assert [r["reason"] for r in blocked["records"]] == ["insufficient_trust"]
        peer = (await api.get(f"/api/peers/{quote(scene.payer.did)}")).json()
        assert peer["peer"]["tier"] == "established" and peer["history"]["points"]
        what_if = await api.get("/api/policy/what-if", params={"set": "thresholds.trusted=0.7"})
        assert what_if.json()["replayed"] == 3
        assert (await api.get("/api/peers/not-a-did")).status_code == 400


# -- refusals -------------------------------------------------------------------------------


async def test_refusals_are_answered_and_logged_without_secrets(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    console: Console, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    await set_scene(store, config, agents)
    [pending] = await read_escalations(config)
    trace = pending["trace_id"]
    caplog.set_level(logging.INFO, logger="broker.console")
    async with console.client() as anonymous:
        page = await anonymous.get("/escalations")
        assert page.status_code == 401 and 'action="/login"' in page.text
        assert (await anonymous.get("/api/escalations")).status_code == 401
        wrong = await anonymous.get("/api/policy", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    for name in ("vera", "olga"):  # only security may approve
        async with console.client(name) as client:
            csrf = field((await client.get("/escalations")).text, "csrf")
            reply = await client.post(f"/escalations/{trace}/approve",
                                      data={"csrf": csrf, "why": "looks fine"})  # fmt: skip
            assert reply.status_code == 403, name
    async with console.client("sam") as sam:  # and only ops may change policy
        csrf = field((await sam.get("/policy")).text, "csrf")
        change = {"path": "caps.established_per_message", "value": "500", "why": "sam tries"}
        reply = await sam.post("/policy", data={"csrf": csrf, **change})
        assert reply.status_code == 403
        assert (await sam.post(f"/escalations/{trace}/approve", data={"why": "no csrf"})
                ).status_code == 403  # fmt: skip
    assert (await store.load_policy()).version == 1
    assert [r["trace_id"] for r in await read_escalations(config)] == [trace]
    refusals = [r.getMessage() for r in caplog.records if "console refused" in r.getMessage()]
    assert len(refusals) == 7
    assert any("403 POST /policy" in line and "user=sam role=security" in line for line in refusals)
    assert any(f"/escalations/{trace}/approve" in line and "user=olga role=ops" in line
               for line in refusals)  # fmt: skip
    for record in caplog.records:
        assert_no_secrets(record.getMessage())
        assert "nope" not in record.getMessage()


async def test_ops_apply_a_policy_change_from_the_what_if(
    router: Router, store: RedisStore, console: Console
) -> None:
    async with console.client("olga") as olga:
        preview = await olga.get("/policy", params={"set": "caps.established_per_message=250"})
        assert "Apply: put in force" in preview.text
        form = {name: field(preview.text, name) for name in ("csrf", "path", "value")}
        reply = await olga.post("/policy", data={**form, "why": "bigger invoices this month"})
        assert reply.status_code == 303
        page = await olga.get(reply.headers["location"])
        assert "policy version 2 is in force" in page.text and "bigger invoices" in page.text
    saved = await store.load_policy()
    assert saved.version == 2 and saved.caps.established_per_message == 250
    [entry] = await store.policy_history()
    assert (entry["who"], entry["why"]) == ("olga", "bigger invoices this month")


async def test_security_releases_a_block_and_rejects_an_escalation_each_once(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    console: Console,
) -> None:  # fmt: skip
    scene = await set_scene(store, config, agents)
    auth = {"Authorization": f"Bearer {TOKENS['sam']}"}
    async with httpx.AsyncClient(base_url=console.url, headers=auth, timeout=30) as api:
        [blocked] = (await api.get("/api/blocked")).json()["records"]
        release = f"/api/blocked/{blocked['trace']}/release"
        assert (await api.post(release, json={})).status_code == 400  # why is required
        done = await api.post(release, json={"why": "a partner we onboard today"})
        assert done.status_code == 200, done.text
        assert done.json()["reviewer"] == "sam" and "token" not in done.json()
        again = await api.post(release, json={"why": "twice?"})
        assert again.status_code == 409 and "already decided" in again.json()["error"]
    [released] = await scene.recipient.receive_all()
    assert released.envelope.sender == scene.newcomer.did
    async with console.client("sam") as sam:
        page = await sam.get("/blocked")
        assert "release by sam" in page.text and "a partner we onboard today" in page.text
        page = await sam.get("/escalations")
        trace = re.findall(r'data-trace="([0-9a-f]{32})"', page.text)[0]
        form = {"csrf": field(page.text, "csrf"), "why": "no such invoice"}
        reply = await sam.post(f"/escalations/{trace}/reject", data=form)
        assert reply.status_code == 303
        assert "No escalations are waiting" in (await sam.get(reply.headers["location"])).text
        again = await sam.post(f"/escalations/{trace}/approve", data=form)
        assert again.status_code == 409 and "already decided: reject by sam" in again.text
    assert await scene.recipient.receive_all(timeout=0.8) == []
    review = await store.review(trace)
    assert review is not None and (review["action"], review["reviewer"]) == ("reject", "sam")


# -- end to end in headless Chromium -------------------------------------------------------


async def test_security_sees_a_block_and_approves_an_escalation_in_chromium(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    console: Console, tmp_path: Path,
) -> None:  # fmt: skip
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.async_api import async_playwright, expect

    newcomer, payer, recipient = await agents(), await agents(), await agents()
    await make_level(store, payer.client, AgentKey.generate(), "established")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)  # fmt: skip
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(console.url + "/blocked")
        await page.fill("input[name=token]", TOKENS["sam"])
        await page.click("button[type=submit]")
        await expect(page.locator("h1")).to_have_text("Blocked messages")

        # A newcomer's message is blocked by the real router; the live feed shows it.
        await page.goto(console.url + "/")
        await newcomer.client.publish_raw(b"not an envelope")
        await newcomer.send(recipient, {"hello": 1})
        row = page.locator("#feed tbody tr", has=page.locator(f'a[title="{newcomer.did}"]'))
        await expect(row).to_contain_text("insufficient_trust", timeout=15_000)
        await page.goto(console.url + "/blocked")
        record = page.locator("details.record", has=page.locator(f'a[title="{newcomer.did}"]'))
        await record.locator("summary .reason").click()  # not a link in the summary
        await expect(record.locator('rect[data-dimension="identity"]')).to_be_visible()
        await expect(record.locator(".remediation")).to_contain_text("identity verification")
        shot = tmp_path / "console.png"
        await page.screenshot(path=str(shot), full_page=True)

        # An established sender pays 150 USD: over its cap, so it waits for a human.
        payment = await payer.send(recipient, {"invoice": 7}, **usd("150.00"))
        assert await eventually(lambda: read_escalations(config))
        await page.goto(console.url + "/escalations")
        item = page.locator("article.escalation", has=page.locator(f'a[title="{payer.did}"]'))
        await expect(item.locator(".amount")).to_have_text("150.00 USD")
        await item.locator("input[name=why]").fill("known supplier, invoice 7 checked")
        await item.locator("button.approve").click()
        await expect(page.locator(".note")).to_contain_text("approve: done")
        await expect(page.locator("article.escalation")).to_have_count(0)
        await browser.close()

    assert shot.stat().st_size > 10_000
    [received] = await recipient.receive_all()
    assert received.envelope.id == payment.id and "approved" in received.trust.reasons
    review = await store.review(received.trust.trace_id)
    assert review is not None
    assert (review["reviewer"], review["why"]) == ("sam", "known supplier, invoice 7 checked")


async def _realistic_traffic(store: RedisStore, config: BrokerConfig, agents: AgentFactory,
                             broker_key: AgentKey) -> tuple[list[Agent], Agent]:  # fmt: skip
    """A dozen peers at every level and a few hundred decisions, as the screenshots show."""
    recipients = [await agents() for _ in range(3)]
    levels = ["new"] * 4 + ["probation"] * 3 + ["established"] * 3 + ["trusted"] * 2
    peers = [await agents() for _ in levels]
    for peer, level in zip(peers, levels, strict=True):
        await make_level(store, peer.client, AgentKey.generate(), level)
    for round_ in range(20):
        for n, peer in enumerate(peers):
            await peer.send(recipients[(round_ + n) % 3], {"task": f"summarise {round_}"})
    payer = peers[7]  # established: 150 USD is over its per-message cap
    await payer.send(recipients[0], {"invoice": 4411}, **usd("150.00"))
    await peers[8].send(recipients[1], {"invoice": 4412}, **usd("320.00"))
    pending = await eventually(lambda: _two(read_escalations(config)), timeout=30)
    asked = next(record for record in pending if record["sender"] == payer.did)
    await request_evidence(config, store, broker_key, asked["trace_id"], "sam",
                           "a bond that covers 150 USD, please")  # fmt: skip
    await eventually(lambda: _decided(store, 240), timeout=60)
    return peers, payer


async def _two(read: Awaitable[list[Record]]) -> list[Record] | None:
    records = await read
    return records if len(records) >= 2 else None


async def _decided(store: RedisStore, count: int) -> bool:
    return len(await store.recent_decisions(limit=count)) >= count


async def test_the_readme_screenshots_from_a_realistic_run(
    router: Router, config: BrokerConfig, store: RedisStore, agents: AgentFactory,
    console: Console, broker_key: AgentKey, tmp_path: Path,
) -> None:  # fmt: skip
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.async_api import async_playwright, expect

    peers, payer = await _realistic_traffic(store, config, agents, broker_key)
    target = Path(os.environ.get("TRUST_CONSOLE_SCREENSHOTS") or tmp_path)
    shots = {name: target / f"{name}.png" for name in
             ("console", "console-peers", "console-escalations")}  # fmt: skip
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)  # fmt: skip
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        await page.goto(console.url + "/login")
        await page.fill("input[name=token]", TOKENS["sam"])
        await page.click("button[type=submit]")
        await page.goto(console.url + "/blocked?limit=12")
        record = page.locator("details.record").first
        await record.locator("summary .reason").click()
        await expect(record.locator(".remediation")).to_be_visible()
        await page.screenshot(path=str(shots["console"]), full_page=True)
        await page.goto(console.url + "/peers")
        await expect(page.locator("#peers tbody tr")).to_have_count(len(peers) + 3)
        await page.screenshot(path=str(shots["console-peers"]), full_page=True)
        await page.goto(console.url + "/escalations")
        card = page.locator("article.escalation", has=page.locator(f'a[title="{payer.did}"]'))
        await expect(card.locator(".evidence-state")).to_contain_text("requested from the sender")
        await page.screenshot(path=str(shots["console-escalations"]), full_page=True)
        await browser.close()
    assert all(shot.stat().st_size > 20_000 for shot in shots.values())
