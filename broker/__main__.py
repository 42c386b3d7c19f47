"""python -m broker: the trust-broker command line."""

from broker.cli import main

raise SystemExit(main())
