"""Everything that speaks AMQP to RabbitMQ besides the router's own loop."""
