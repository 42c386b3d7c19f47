"""The command line: parsing, configuration precedence, key files, masked secrets."""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from broker.app import load_or_create_broker_key
from broker.cli.main import build_parser, main
from broker.cli.settings import broker_config, router_logins
from broker.config import BrokerConfig, mask_url, split_urls, with_vhost
from broker.core.identity import AgentKey
from broker.devkit import credentials
from broker.errors import ConfigError
from broker.sdk.keyfile import load_key, save_key


def _commands(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, Any]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub
                yield from _commands(sub, f"{path} {name}")


def test_every_command_has_a_description_and_an_example() -> None:
    commands = list(_commands(build_parser(), "trust-broker"))
    assert len(commands) >= 40
    for path, sub in commands:
        text = sub.format_help()
        assert text.startswith(f"usage: {path}"), path
        assert sub.description and len(sub.description) > 40, f"{path}: no description"
        examples = (sub.epilog or "").partition("examples:\n")[2]
        assert examples.strip().startswith("trust-broker") or "=$(trust-broker" in examples, (
            f"{path}: no example"
        )
        assert "examples:" in text, path


def test_python_dash_m_broker_prints_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "broker", "--help"], capture_output=True, text=True, check=True
    )
    assert "five" in out.stdout and "provision" in out.stdout


def test_flags_beat_environment_and_urls_follow_local_ports(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--vhost", "v1", "peer", "x"])
    env = {"TRUST_AMQP_PORT": "5999", "TRUST_REDIS_PORT": "6999", "TRUST_VHOST": "ignored",
           "TRUST_RUN_DIR": str(tmp_path)}  # fmt: skip
    config = broker_config(env, args)
    # No credentials file: no login at all (there is no default one).
    assert config.amqp_url == "amqp://127.0.0.1:5999/"
    assert config.redis_url == "redis://127.0.0.1:6999/0"
    assert config.vhost == "v1"


def test_the_cli_logs_in_with_the_run_directorys_generated_credentials(tmp_path: Path) -> None:
    creds = credentials.load_or_create(tmp_path)
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert credentials.load_or_create(tmp_path) == creds  # generated once
    env = {"TRUST_RUN_DIR": str(tmp_path), "TRUST_AMQP_PORT": "5999", "TRUST_RABBITMQ_NODES": "3",
           "TRUST_REDIS_SENTINEL": "1", "TRUST_REDIS_PORT": "6999"}  # fmt: skip
    config = broker_config(env, build_parser().parse_args(["peer", "x"]))
    nodes = config.amqp_url.split(",")
    assert [n.rpartition("@")[2] for n in nodes] == [
        "127.0.0.1:5999/", "127.0.0.1:6000/", "127.0.0.1:6001/",
    ]  # fmt: skip
    assert all(n.startswith(f"amqp://trust-admin:{creds.admin_password}@") for n in nodes)
    assert config.redis_url == (
        f"redis+sentinel://:{creds.redis_password}@127.0.0.1:26999,127.0.0.1:27000,"
        "127.0.0.1:27001/trustbroker/0"
    )
    assert creds.admin_password not in repr(config) and creds.admin_password not in repr(creds)
    # An explicit URL still wins over the file.
    explicit = broker_config(
        {**env, "TRUST_AMQP_URL": "amqp://u:p@h:1/"}, build_parser().parse_args(["peer", "x"])
    )
    assert explicit.amqp_url == "amqp://u:p@h:1/"


def test_the_router_runs_with_its_own_logins(tmp_path: Path) -> None:
    creds = credentials.load_or_create(tmp_path)
    env = {"TRUST_RUN_DIR": str(tmp_path), "TRUST_AMQP_PORT": "5999"}
    config = router_logins(broker_config(env, build_parser().parse_args(["peer", "x"])), env)
    assert config.amqp_url == f"amqp://trust-router:{creds.router_password}@127.0.0.1:5999/"
    assert config.reply_amqp_url.startswith("amqp://trust-negotiator:")
    assert config.admin_url.startswith("amqp://trust-admin:")


def test_url_lists_are_split_and_masked() -> None:
    assert split_urls(" amqp://a:1/ , amqp://b:2/,") == ("amqp://a:1/", "amqp://b:2/")
    assert mask_url("amqp://u:s1@a:1/,amqp://u:s2@b:2/") == "amqp://u:***@a:1/,amqp://u:***@b:2/"
    config = BrokerConfig(amqp_url="amqp://u:p@a:1/,amqp://u:p@b:2/", vhost="v")
    assert config.amqp_vhost_urls == ("amqp://u:p@a:1/v", "amqp://u:p@b:2/v")


def test_trace_retention_comes_from_the_environment_and_nonsense_is_refused() -> None:
    args = build_parser().parse_args(["peer", "x"])
    assert broker_config({}, args).trace_ttl_ms == 24 * 3_600_000
    assert broker_config({"TRUST_TRACE_TTL_HOURS": "1.5"}, args).trace_ttl_ms == 5_400_000
    for bad in ("0", "-3", "a day", "9000"):
        with pytest.raises(ConfigError, match="TRUST_TRACE_TTL_HOURS"):
            broker_config({"TRUST_TRACE_TTL_HOURS": bad}, args)


def test_passwords_never_appear_in_repr() -> None:
    config = BrokerConfig(amqp_url="amqp://u:s3cret@h:1/", redis_url="redis://:pw@h:2/0")
    assert "s3cret" not in repr(config) and "pw@" not in repr(config)
    assert mask_url("amqp://u:s3cret@h:1/") == "amqp://u:***@h:1/"
    assert with_vhost("amqp://u:p@h:1/", "a/b") == "amqp://u:p@h:1/a%2Fb"


def test_key_files_are_private_and_never_overwritten_by_accident(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    key = AgentKey.generate()
    save_key(path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key(path).did == key.did
    assert key.seed.hex() not in repr(key)
    with pytest.raises(ConfigError):
        save_key(path, AgentKey.generate())
    other = AgentKey.generate().did
    path.write_bytes(orjson.dumps({"did": other, "seed": key.seed.hex()}))
    with pytest.raises(ConfigError):
        load_key(path)


def _first_broker_key(path: str, start: Any, out: Any) -> None:
    start.wait()
    try:
        out.put(load_or_create_broker_key(BrokerConfig(broker_key_file=path)).did)
    except ConfigError as exc:
        out.put(f"error: {exc}")


def test_routers_started_together_share_one_broker_key_and_none_fails(tmp_path: Path) -> None:
    """Every router of a deployment creates the shared broker key file if it is missing;
    started at the same instant, one writes it and the others must read it whole (a
    router that read it half written exited with 'cannot read key file')."""
    # forkserver: each worker forks from a clean process, never from this threaded one
    fork = multiprocessing.get_context("forkserver")
    fork.set_forkserver_preload([__name__])  # imported once, not by every worker
    routers, rounds = 6, 40
    for round_ in range(rounds):
        path = str(tmp_path / f"broker-{round_}.key")
        start, out = fork.Barrier(routers), fork.Queue()
        workers = [
            fork.Process(target=_first_broker_key, args=(path, start, out)) for _ in range(routers)
        ]
        for worker in workers:
            worker.start()
        dids = [out.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(30)
        assert dids == [load_key(Path(path)).did] * routers, f"round {round_}: {dids}"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_keygen_prints_the_did_and_errors_exit_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    did = capsys.readouterr().out.strip()
    assert did.startswith("did:key:z6Mk") and load_key(tmp_path / "k").did == did
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 1
    assert "exists" in capsys.readouterr().err


def test_the_router_runs_on_asyncio_unless_uvloop_is_asked_for() -> None:
    import uvloop  # in the dev extra; optional for users

    from broker.cli.main import event_loop_factory

    def router(*flags: str) -> argparse.Namespace:
        return build_parser().parse_args(["router", *flags])

    assert event_loop_factory(router(), {}) is None
    assert event_loop_factory(router(), {"TRUST_EVENT_LOOP": "auto"}) is uvloop.new_event_loop
    assert event_loop_factory(router("--loop", "uvloop"), {}) is uvloop.new_event_loop
    assert event_loop_factory(router("--loop", "asyncio"), {"TRUST_EVENT_LOOP": "uvloop"}) is None
    # Short commands keep asyncio's own loop, whatever the environment says.
    keygen = build_parser().parse_args(["keygen", "--out", "k"])
    assert event_loop_factory(keygen, {"TRUST_EVENT_LOOP": "uvloop"}) is None
    with pytest.raises(ConfigError, match="TRUST_EVENT_LOOP"):
        event_loop_factory(router(), {"TRUST_EVENT_LOOP": "trio"})


# -- who decides -------------------------------------------------------------------------

TRACE = "01a2335440847160be5e665f909ae659"


def _no_account() -> str:
    raise KeyError("getpwuid(): uid not found: 54321")  # a container's anonymous uid


def test_decisions_default_to_the_configured_name_then_the_os_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import getpass

    from broker.cli.support import os_account, person

    monkeypatch.setattr(getpass, "getuser", lambda: "olga")
    assert os_account({}) == "olga"
    assert os_account({"TRUST_REVIEWER": "sam"}) == "sam"
    assert person("rita", "olga", "--reviewer") == "rita"
    assert person(None, "olga", "--reviewer") == "olga"
    monkeypatch.setattr(getpass, "getuser", _no_account)
    assert os_account({}) is None
    with pytest.raises(ConfigError, match=r"--reviewer NAME.*TRUST_REVIEWER"):
        person(None, None, "--reviewer")


def test_without_any_name_a_review_says_which_flag_to_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass

    for name in ("USER", "LOGNAME", "LNAME", "USERNAME", "TRUST_REVIEWER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(getpass, "getuser", _no_account)
    assert main(["blocked", "release", TRACE, "--why", "false positive"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--reviewer NAME" in err and "Traceback" not in err
    assert main(["policy", "set", "thresholds.probation", "0.55", "--why", "x"]) == 1
    assert "--who NAME" in capsys.readouterr().err
