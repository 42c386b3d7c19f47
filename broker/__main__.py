"""python -m broker: the trust-broker command line."""

from broker.cli.main import main

raise SystemExit(main())
