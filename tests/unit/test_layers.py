"""Only the command line reads the environment (os.environ, os.getenv): everything below
it gets typed configuration (broker.config) built there. import-linter checks the other
layers (pyproject.toml); it sees imports, not attribute reads, hence this test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "broker"
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _cli_layer(module: str) -> bool:
    """The entry points and what only they use: broker.__main__, broker.cli, devkit."""
    top = module.partition(".")[2].partition(".")[0]
    return top in ("__main__", "cli", "devkit")


def _reads_environment(source: str) -> list[int]:
    """Lines that touch the process environment through the os module."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT:
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines.extend(node.lineno for alias in node.names if alias.name in ENVIRONMENT)
    return lines


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("import os\nx = os.environ['A']", True),
        ("import os\nx = os.environ.get('A')", True),
        ("import os\nx = os.getenv('A')", True),
        ("from os import environ", True),
        ("from os import getenv as g", True),
        ("import os\nx = os.path.join('a')", False),
        ("env = {}\nx = env.get('A')", False),
        ("x = config.environ", False),
    ],
)
def test_the_detector_sees_every_way_of_reading_the_environment(source: str, reads: bool) -> None:
    assert bool(_reads_environment(source)) is reads


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("broker.cli", True),
        ("broker.cli.messages", True),
        ("broker.__main__", True),
        ("broker.devkit.install", True),
        ("broker.cli.console", True),
        ("broker.console.app", False),
        ("broker.router", False),
        ("broker.config", False),
        ("broker.sdk.client", False),
        ("broker", False),
    ],
)
def test_the_cli_layer_is_the_entry_points_and_devkit(module: str, allowed: bool) -> None:
    assert _cli_layer(module) is allowed


def test_only_the_cli_layer_reads_the_environment() -> None:
    readers = {
        f"{_module_name(path)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if not _cli_layer(_module_name(path))
        for line in _reads_environment(path.read_text())
    }
    assert not readers, "read the environment in broker/cli/ and pass configuration down"


def _imported_modules(source: str) -> set[str]:
    """Every module an import statement in `source` names (module level or local)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _importers(prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> what it imports of `prefixes` (a name or one of its submodules)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        names = {
            name for name in _imported_modules(path.read_text())
            if any(name == p or name.startswith(p + ".") for p in prefixes)
        }  # fmt: skip
        if names:
            found[_module_name(path)] = names
    return found


def test_only_broker_amqp_names_the_amqp_clients_exceptions() -> None:
    # One place says what RabbitMQ's client raises (broker/amqp/errors.py): elsewhere a
    # hand-made tuple of exception classes is how five different ones came about.
    outside = {
        module: names
        for module, names in _importers(("aio_pika.exceptions", "aiormq.exceptions")).items()
        if not module.startswith("broker.amqp")
    }
    assert not outside, "import them from broker.amqp.errors"


def test_only_the_store_imports_redis() -> None:
    outside = {
        module: names
        for module, names in _importers(("redis",)).items()
        if not module.startswith("broker.store")
    }
    assert not outside, "Redis is the store's: go through broker.store"


def test_the_import_scanner_sees_submodules_and_names() -> None:
    assert "aio_pika.exceptions" in _imported_modules("import aio_pika.exceptions")
    assert "aio_pika.exceptions.AMQPError" in _imported_modules(
        "from aio_pika.exceptions import AMQPError"
    )
    assert "aio_pika.exceptions" in _imported_modules("from aio_pika import exceptions")
