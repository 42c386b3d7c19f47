"""The store's Lua scripts, one file each, with their KEYS and ARGV named at the top."""

from __future__ import annotations

from importlib import resources


def lua_script(name: str) -> str:
    """The source of `<name>.lua` in this package."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
