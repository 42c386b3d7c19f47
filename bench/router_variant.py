"""Run the router from another revision of the code, so a benchmark can put the router as
it was before a change beside the router as it is now, alternating in the same run.

    python bench/router_variant.py --rev 7690714 -- --log-level WARNING router
    python bench/router_variant.py --source /path/to/checkout -- router --prefetch 512

`--rev` exports that revision's broker/ package (git archive) into a cache directory once
and imports it instead of this checkout's; the installed dependencies stay the same. The
variant is only ever a process of its own: nothing here patches the running code.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def export_revision(rev: str) -> Path:
    """broker/ as of `rev`, exported once into a directory named by its commit."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    target = Path(tempfile.gettempdir()) / f"trust-broker-{commit[:12]}"
    if not (target / "broker" / "__init__.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, "broker"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Put the chosen source first on sys.path, then run its CLI with the rest."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--rev", help="a git revision of this repository (commit, tag, HEAD~3)")
    group.add_argument("--source", help="a directory holding a broker/ package")
    args = parser.parse_args(argv[:split])
    source = export_revision(args.rev) if args.rev else Path(args.source).resolve()
    if not (source / "broker" / "__init__.py").exists():
        parser.error(f"{source} has no broker/ package")
    sys.path.insert(0, str(source))
    from broker import cli

    if not Path(cli.__file__).resolve().is_relative_to(source):
        raise SystemExit(f"imported {cli.__file__}, not the variant under {source}")
    # The entry point is broker/cli/main.py since the command line became a package, and
    # broker/cli.py in revisions before it.
    entry = importlib.import_module("broker.cli.main") if hasattr(cli, "__path__") else cli
    return int(entry.main(argv[split + 1 :]))


if __name__ == "__main__":
    sys.exit(main())
