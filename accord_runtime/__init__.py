"""The runtime every Accord service stands on: event store, outbox relay, projections,
bus consumers, durable wiring to PostgreSQL and RabbitMQ, and the service bootstrap."""
