"""Development tooling, not the runtime: local RabbitMQ and Redis servers from the Debian
packages (a single pair or a cluster with Sentinels) and the scripted demo.

Only the command line (broker.cli, `python -m broker servers|demo`, scripts/servers)
imports this package; the router, the store and the SDK never do.
"""
