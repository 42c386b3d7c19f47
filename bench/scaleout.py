"""Scale-out: one router process against two on the same RabbitMQ and Redis.

The throughput benchmark's load (same producers, consumers, sizes, persistent confirmed
publishes) through `router` (one process) and `router-x2` (two processes competing for
`trust.ingress`), alternating A B A B. Reports msg/s for each, the ratio, and the CPU
each process used, which shows what saturates. Any path of bench/load.py can be given,
e.g. `--paths router-before,router-before-x2` for the router as it was before the
optimisations of docs/PERFORMANCE.md section 7.

    python bench/scaleout.py --json bench/results/scaleout.json
    python bench/scaleout.py --quick             # a few seconds: the CI smoke run
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from harness import write_json
from throughput import apply_quick, parse, run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write JSON if asked."""
    parser = parse(argv, __doc__ or "")
    parser.set_defaults(paths="router,router-x2", sizes="1024", messages=10_000)
    args = apply_quick(parser.parse_args(argv))
    report = asyncio.run(run(args))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
