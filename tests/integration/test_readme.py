"""The README's walkthrough, run exactly as written: from two fresh keys to a delivered
message and on to a delivered payment, with the command line alone.

The commands are read from README.md (the ```sh blocks between the walkthrough markers),
never copied here, so the README cannot drift from what works."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from broker.config import BrokerConfig
from broker.core.records import BlockedFilter
from broker.ops.reading import tail_blocked
from broker.router import Router
from tests.integration.conftest import REPO
from tests.integration.test_cli_flow import cli_env


def walkthrough(readme: str) -> str:
    """The shell commands of the README's walkthrough, in order."""
    region = readme.split("<!-- walkthrough -->", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", region, flags=re.S)
    assert len(blocks) >= 3, "the walkthrough has its three steps"
    return "\n".join(blocks)


async def test_the_readme_walkthrough_delivers_a_message_then_a_payment(
    router: Router, config: BrokerConfig, tmp_path: Path
) -> None:
    script = walkthrough((REPO / "README.md").read_text())
    assert "trust-broker provision" in script and "--amount 20" in script
    env = {
        **cli_env(config),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TRUST_LOG_LEVEL": "WARNING",
    }
    done = await asyncio.to_thread(
        subprocess.run, ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    told, printed = done.stderr, done.stdout
    assert "Traceback" not in told
    # Each step says what changed and why, as the README shows.
    for step in (
        "a data message from you is blocked (insufficient_trust)",
        "proved: the broker recorded that you hold the key",
        "accepted credential",
        "a data message from you is delivered (probation)",
        "accepted bond",
        "a payment of 20 USD from you is delivered (payment_within_caps)",
    ):
        assert step in told, step
    assert "weakest:" in told and "next:" in told
    # Bob received the data message on probation, then the payment from an established Alice.
    messages = printed.split("\nmessage ")
    data = next(m for m in messages if "(data)" in m)
    payment = next(m for m in messages if "(payment, 20 USD)" in m)
    assert "tier probation" in data and "identity 0.9000" in data and "weakest:" in data
    assert "tier established" in payment and "stake 1.0000" in payment
    assert '"invoice":4411' in payment
    # And the first, sent as a newcomer, waits on the blocked stream for security.
    alice = (tmp_path / "alice.key").read_text()
    blocked = await tail_blocked(config, BlockedFilter(reason="insufficient_trust"))
    assert [entry.record["sender"] for entry in blocked] == [
        did for did in re.findall(r'"did":\s*"([^"]+)"', alice)
    ]
