"""The trust-broker command line: `main` (the parser and the entry point), `settings`
(configuration from flags and the environment), `support` and `errors` (what every
command shares), and one module per command group.

Only this package and devkit/ read the environment (tests/unit/test_layers.py).
"""
