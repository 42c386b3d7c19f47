"""`trust-broker policy`: show, change, version, roll back and what-if the routing policy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.cli.support import command, json_flag, person, print_json, read_json, say
from broker.config import BrokerConfig
from broker.core.records import iso_ms
from broker.errors import ConfigError

ACTIONS = ["show", "diff", "set", "load", "history", "rollback", "what-if"]


async def cmd_policy(args: argparse.Namespace, config: BrokerConfig) -> int:
    """Show, change, version and what-if the routing policy."""
    from broker.app import open_store
    from broker.core import policydiff

    changing = args.action in ("set", "load", "rollback")
    # Who and why first: a refusal must not need the servers.
    who = person(args.who, args.default_who, "--who") if changing else ""
    why = _required(args.why, "--why") if changing else ""
    store = open_store(config)
    try:
        current = await store.load_policy()
        if args.action == "show":
            print_json(current.model_dump(mode="json"))
            return 0
        if args.action == "history":
            history = await store.policy_history(limit=args.limit)
            _print_history(policydiff.history_with_default(history, args.limit), args.json)
            return 0
        proposed = await _proposed(args, current, store)
        changes = policydiff.diff(current, proposed)
        if args.action in ("diff", "what-if"):
            return await _preview(store, current, proposed, changes, args)
        if not changes:
            say("no change: the policy in force is identical")
            return 0
        saved = await store.save_policy(proposed, who=who, why=why)
    finally:
        await store.close()
    if args.json:
        print_json({"version": saved.version, "changes": [list(c) for c in changes]})
        return 0
    _print_changes(changes)
    say(f"policy version {saved.version} is in force on every router (by {who})")
    return 0


async def _proposed(args: argparse.Namespace, current: Any, store: Any) -> Any:
    """The policy an action proposes: an earlier version, one changed value, or a file."""
    from broker.core import policydiff
    from broker.core.policy import load_policy

    if args.action == "rollback":
        target = _required(args.target, "VERSION")
        if not target.isdigit():
            raise ConfigError(f"rollback takes a version number, not {target!r}")
        return await store.policy_version(int(target))
    if args.action == "set":
        path, value = _required(args.target, "PATH"), _required(args.value, "VALUE")
        return policydiff.set_value(current, path, value)
    if args.action == "what-if" and args.set_path:
        path, _, value = args.set_path.partition("=")
        return policydiff.set_value(current, path, _required(value, "--set PATH=VALUE"))
    file = _required(args.target, "FILE")
    data = read_json(file, "policy file")
    if not isinstance(data, dict):
        raise ConfigError(f"policy file {Path(file)} is not a JSON object")
    return load_policy({**data, "version": current.version})


def _required(value: str | None, name: str) -> str:
    if not value:
        raise ConfigError(f"{name} is required here")
    return value


def _value(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def _print_changes(changes: list[tuple[str, Any, Any]]) -> None:
    for path, old, new in changes:
        print(f"  {path}: {_value(old)} -> {_value(new)}")


def _print_history(history: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(history)
        return
    for entry in history:
        at = entry.get("at_ms")
        when = iso_ms(at) if isinstance(at, int) else "-" * 24
        print(f"v{entry['version']:<4} {when}  {entry['who']:<12} {entry['why']}")


async def _preview(
    store: Any, current: Any, proposed: Any, changes: list[tuple[str, Any, Any]],
    args: argparse.Namespace,
) -> int:  # fmt: skip
    from broker.core.whatif import replay

    if args.action == "diff":
        if args.json:
            print_json({"changes": [list(c) for c in changes]})
        else:
            _print_changes(changes) if changes else print("no difference")
        return 0
    entries = await store.recent_decisions(
        limit=args.last, since_ms=args.since_ms, until_ms=args.until_ms
    )
    result = replay(entries, current, proposed).to_dict()
    if args.json:
        print_json({**result, "policy_changes": [list(c) for c in changes]})
        return 0
    _print_changes(changes)
    print(f"replayed {result['replayed']} decisions: {result['unchanged']} unchanged, "
          f"{result['newly_blocked']} newly blocked, {result['newly_delivered']} newly "
          f"delivered, {result['newly_escalated']} newly escalated")  # fmt: skip
    for title, groups in (("by sender", result["by_sender"]), ("by reason", result["by_reason"])):
        if groups:
            print(title)
        for name, actions in groups.items():
            print(f"  {name}: {_counts(actions)}")
    if result["changed_scoring"]:
        sections = ", ".join(result["changed_scoring"])
        print(
            f"note: scoring constants changed ({sections}); the logged dimension scores "
            "predate them, so replay live to see their effect"
        )
    return 0


def _counts(actions: dict[str, int]) -> str:
    """{'block': 3, 'deliver': 1} as '3 newly blocked, 1 newly delivered'."""
    words = {"block": "blocked", "deliver": "delivered", "escalate": "escalated"}
    return ", ".join(f"{n} newly {words.get(a, a)}" for a, n in sorted(actions.items()))


def add_commands(sub: Any, *, default_who: str | None) -> None:
    """Register `policy`; changes are recorded under --who, else `default_who`."""
    p = command(
        sub, "policy",
        summary="show, change, version, roll back or what-if the routing policy",
        description="show: the policy in force. diff FILE: what FILE would change. set PATH "
        "VALUE (e.g. thresholds.probation 0.55) and load FILE: validate and put in force on "
        "every router within a second, as a new version recording --who and --why. history: "
        "every version with who, when, why (version 1 is the built-in default). rollback "
        "VERSION: a new version equal to an earlier one. what-if FILE (or --set PATH=VALUE): "
        "replay the last --last decisions (or a --since-ms/--until-ms range) under the "
        "proposal and report what would change, by sender and reason, without applying it. A "
        "bad policy is refused with the reason, never repaired.",
        examples=["trust-broker policy show",
                  "trust-broker policy what-if --set thresholds.probation=0.55",
                  "trust-broker policy set thresholds.probation 0.55 --why \"fewer probation "
                  "deliveries\"",
                  "trust-broker policy history",
                  "trust-broker policy rollback 3 --why undo"],
    )  # fmt: skip
    p.add_argument("action", choices=ACTIONS)
    p.add_argument(
        "target", nargs="?", help="FILE (diff, load, what-if), PATH (set), VERSION (rollback)"
    )
    p.add_argument("value", nargs="?", help="VALUE for set (JSON; e.g. 0.55)")
    p.add_argument("--set", dest="set_path", help="what-if a single change: PATH=VALUE")
    p.add_argument("--why", help="reason for the change (required for set, load, rollback)")
    p.add_argument(
        "--who", help="who makes the change (default TRUST_REVIEWER, else the OS account)"
    )
    p.add_argument("--last", type=int, default=1000, help="what-if: replay the last N decisions")
    p.add_argument("--since-ms", type=int, help="what-if: decisions from this Unix ms on")
    p.add_argument("--until-ms", type=int, help="what-if: decisions up to this Unix ms")
    p.add_argument("--limit", type=int, default=50, help="history: versions to show")
    json_flag(p)
    p.set_defaults(handler=cmd_policy, default_who=default_who)
