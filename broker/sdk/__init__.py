"""The agent SDK: what an agent program uses to talk to the broker.

`client` is the AgentClient (publish, consume, negotiate); `received` what a delivery
carries; `publishing` paces publishes; `requests` is the line to the negotiator;
`keyfile` stores an agent's key.
"""
