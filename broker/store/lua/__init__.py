"""The store's Lua scripts, one file each, with their KEYS and ARGV named at the top."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def lua_script(*names: str) -> str:
    """The source of `<name>.lua` in this package, for each name in order: a script that
    uses another's functions (decay.lua) is named after it."""
    files = resources.files(__package__)
    return "".join(files.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in names)
