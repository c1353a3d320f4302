"""``accord``: the operators' command line for a running Accord deployment.

It talks to the services over HTTP (httpx), to RabbitMQ for ``events`` and ``dlq`` (aio-pika), and
runs a service's runtime in-process only where an operator command must (``rebuild``, the identity
seeding of ``demo``). Exit codes: 0 done, 1 refused or failed, 2 usage, 3 a server cannot be reached.
"""
