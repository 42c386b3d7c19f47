"""The pure core: no Redis, no AMQP, no event loop, no clock."""
